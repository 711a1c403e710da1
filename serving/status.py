"""The one table from domain errors to gRPC status codes.

Servicers raise (or receive from the core) the errors of
:mod:`loopline.contracts.errors`; only this module knows status codes.
The first matching row wins, so subclasses come before their bases.

>>> from loopline.contracts.errors import InvalidRequestError, UnavailableError
>>> status_for(InvalidRequestError("x")).name, status_for(UnavailableError("y")).name
('INVALID_ARGUMENT', 'UNAVAILABLE')
>>> status_for(KeyError("k")).name
'INTERNAL'
"""

from __future__ import annotations

import grpc

from loopline.contracts.errors import (
    ConfigError,
    FeatureError,
    FingerprintMismatchError,
    InvalidRequestError,
    LooplineError,
    ModelError,
    ModelNotFoundError,
    OverloadedError,
    SchemaError,
    UnavailableError,
)

STATUS_BY_ERROR: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (SchemaError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FingerprintMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (FeatureError, grpc.StatusCode.INTERNAL),
    (ModelError, grpc.StatusCode.INTERNAL),
    (ConfigError, grpc.StatusCode.INTERNAL),
    (LooplineError, grpc.StatusCode.INTERNAL),
)


def status_for(error: BaseException) -> grpc.StatusCode:
    """The status code a call answers with when it fails with ``error``."""
    for kind, code in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL
