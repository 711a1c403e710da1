from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_STATUS_UNSPECIFIED: _ClassVar[FeatureStatus]
    FEATURE_STATUS_OK: _ClassVar[FeatureStatus]
    FEATURE_STATUS_MISSING: _ClassVar[FeatureStatus]
    FEATURE_STATUS_STALE: _ClassVar[FeatureStatus]
    FEATURE_STATUS_DEFAULTED: _ClassVar[FeatureStatus]
FEATURE_STATUS_UNSPECIFIED: FeatureStatus
FEATURE_STATUS_OK: FeatureStatus
FEATURE_STATUS_MISSING: FeatureStatus
FEATURE_STATUS_STALE: FeatureStatus
FEATURE_STATUS_DEFAULTED: FeatureStatus

class PredictRequest(_message.Message):
    __slots__ = ("request_id", "entities", "fields", "event_time_ms", "model", "event_id", "arm")
    class EntitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    entities: _containers.ScalarMap[str, str]
    fields: _containers.ScalarMap[str, float]
    event_time_ms: int
    model: str
    event_id: str
    arm: str
    def __init__(self, request_id: _Optional[str] = ..., entities: _Optional[_Mapping[str, str]] = ..., fields: _Optional[_Mapping[str, float]] = ..., event_time_ms: _Optional[int] = ..., model: _Optional[str] = ..., event_id: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("name", "value", "status")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    status: FeatureStatus
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., status: _Optional[_Union[FeatureStatus, str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("request_id", "score", "model_name", "model_version", "features", "arm", "degraded")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    score: float
    model_name: str
    model_version: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureValue]
    arm: str
    degraded: bool
    def __init__(self, request_id: _Optional[str] = ..., score: _Optional[float] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureValue, _Mapping]]] = ..., arm: _Optional[str] = ..., degraded: _Optional[bool] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[PredictRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[PredictRequest, _Mapping]]] = ...) -> None: ...

class PredictResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: PredictResponse
    error: PredictError
    def __init__(self, response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[PredictError, _Mapping]] = ...) -> None: ...

class PredictError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PredictResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PredictResult, _Mapping]]] = ...) -> None: ...
