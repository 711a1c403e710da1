"""A scoring request as the core sees it, what comes back, and the checks a request passes.

Independent of the API a request arrived through: the gRPC adapters build a
:class:`PredictInput` (or a raw feature matrix); :class:`RequestCheck`,
:func:`check_matrix` and the limit checks refuse a bad one with a precise
:class:`~loopline.contracts.errors.InvalidRequestError` naming the setting
that raises the limit. Every value a refusal echoes is cut short
(:func:`shown`): an error must not be as large as the request it refuses.

>>> shown("x" * 100)
"'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' (102 characters)"
>>> check_rows(513, 512)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
loopline.contracts.errors.InvalidRequestError: 513 rows exceed the batch limit 512; ...
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from loopline.contracts.errors import InvalidRequestError
from loopline.rollout.plan import ARMS, CHAMPION
from loopline.serving.features import FeatureStatus, LookupPlan
from loopline.serving.model import LoadedModel

# The largest magnitude a feature can hold: models take FP32, so a larger
# request value would reach them as inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# How much of a value a refusal echoes.
SHOWN_CHARS = 50


def shown(value: object, *, quoted: bool = True) -> str:
    """``repr(value)`` (``str`` unless ``quoted``), cut to :data:`SHOWN_CHARS`, length noted."""
    text = repr(value) if quoted else str(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}...{text[-1]} ({len(text)} characters)"


def check_size(size: int, limit: int) -> None:
    """Refuse a request message of ``size`` bytes over ``limit`` (serving.max_message_bytes)."""
    if size > limit:
        raise InvalidRequestError(
            f"request is {size} bytes; the limit is {limit} (raise serving.max_message_bytes)"
        )


def check_rows(n: int, limit: int, what: str = "rows") -> None:
    """Refuse ``n`` rows (or requests) over ``limit`` (serving.max_batch_size)."""
    if n > limit:
        raise InvalidRequestError(
            f"{n} {what} exceed the batch limit {limit}; send fewer or raise serving.max_batch_size"
        )


def check_ids(limit: int, **ids: str) -> None:
    """Refuse an id (request, event, model, version) longer than ``limit`` characters.

    Ids share serving.max_entity_id_length with entity ids: they are logged
    and echoed, so none may be as large as a whole message.
    """
    for name, value in ids.items():
        if len(value) > limit:
            raise InvalidRequestError(
                f"{name} is {len(value)} characters long (limit {limit}): shorten it or "
                "raise serving.max_entity_id_length"
            )


@dataclass(frozen=True, slots=True)
class PredictInput:
    """One scoring request, independent of the API it arrived through."""

    entities: Mapping[str, str]
    fields: Mapping[str, float]
    event_time_ms: int = 0
    request_id: str = ""
    event_id: str = ""
    model: str = ""
    model_version: str = ""
    # Rollout arm override: "" (follow the plan), "champion" or "candidate".
    arm: str = ""

    def time_s(self) -> float:
        """The event time features are computed at (seconds; now when unset)."""
        return self.event_time_ms / 1000.0 if self.event_time_ms else time.time()

    def logged_time_ms(self) -> int:
        """The event time a prediction log record carries (milliseconds; now when unset)."""
        return self.event_time_ms or int(time.time() * 1000)


@dataclass(slots=True)
class Prediction:
    """A score with the exact vector (model order) and a status per feature."""

    request_id: str
    score: float
    model: LoadedModel
    features: list[float]
    statuses: Sequence[FeatureStatus]
    degraded: bool
    entities: Mapping[str, str] = field(default_factory=dict)
    arm: str = CHAMPION


# A request's features in feature-set order, a status per feature, and
# whether any was not fresh from the store.
FeatureRow = tuple[list[float], Sequence[FeatureStatus], bool]


def prediction_of(
    model: LoadedModel,
    score: float,
    row: FeatureRow,
    *,
    request_id: str,
    entities: Mapping[str, str],
    arm: str,
    ordered: list[float] | None = None,
) -> Prediction:
    """The prediction ``model`` made from ``row``: vector and statuses in the model's order.

    ``ordered`` is the row's vector in the model's order when the caller has it already.
    """
    vector, statuses, degraded = row
    if ordered is None:
        ordered = model.order(vector)
    # Fresh rows share one all-OK tuple, the same in every order.
    if degraded and model.permutation is not None:
        statuses = [statuses[k] for k in model.permutation]
    return Prediction(
        request_id=request_id,
        score=score,
        model=model,
        features=ordered,
        statuses=statuses,
        degraded=degraded,
        entities=entities,
        arm=arm,
    )


class RequestIds:
    """Unique request ids without the cost of a UUID per call.

    >>> ids = RequestIds("p1")
    >>> ids.next(), ids.next()
    ('p1-1', 'p1-2')
    """

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


class RequestCheck:
    """What one server accepts: its repo's key and request fields, within limits."""

    def __init__(self, plan: LookupPlan, max_entity_id_length: int) -> None:
        self._plan = plan
        self.max_entity_id_length = max_entity_id_length
        self._key_fields = frozenset(plan.key_fields)
        self._request_fields = frozenset(plan.request_fields)

    def __call__(self, inp: PredictInput) -> list[str]:
        """Entity ids in view order; raises with a precise message on any fault."""
        limit = self.max_entity_id_length
        check_ids(limit, request_id=inp.request_id, event_id=inp.event_id)
        for name in inp.entities:
            if name not in self._key_fields:
                raise InvalidRequestError(
                    f"unknown entity field {shown(name)}; expected {sorted(self._key_fields)}"
                )
        for name in self._plan.key_fields:
            value = inp.entities.get(name, "")
            if not value:
                raise InvalidRequestError(f"entity field {name!r} is missing or empty")
            if len(value) > limit:
                raise InvalidRequestError(
                    f"entity field {name!r} is {len(value)} characters long (limit {limit}): "
                    "shorten it or raise serving.max_entity_id_length"
                )
        for name in inp.fields:
            if name not in self._request_fields:
                raise InvalidRequestError(
                    f"unknown field {shown(name)}; expected {sorted(self._request_fields)}"
                )
        for name in self._plan.request_fields:
            value = inp.fields.get(name)
            if value is None:
                raise InvalidRequestError(f"field {name!r} is missing")
            if not math.isfinite(value):
                raise InvalidRequestError(f"field {name!r} is {value}; it must be finite")
            if abs(value) > FLOAT32_MAX:
                raise InvalidRequestError(
                    f"field {name!r} is {value}; features are FP32, so it must be within "
                    f"+-{FLOAT32_MAX:.6g}"
                )
        if inp.arm and inp.arm not in ARMS:
            raise InvalidRequestError(
                f"arm {shown(inp.arm)} is not one of {('', *ARMS)}; '' follows the rollout plan"
            )
        if inp.event_time_ms < 0:
            raise InvalidRequestError(
                f"event_time_ms is {inp.event_time_ms}; use epoch milliseconds, or 0 for now"
            )
        return self._plan.entity_ids(inp.entities)


def check_matrix(matrix: np.ndarray, feature_names: Sequence[str], max_rows: int) -> None:
    """Refuse a raw feature matrix that is not ``[1..max_rows, n_features]`` of finite values."""
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names):
        raise InvalidRequestError(
            f"expected a [n, {len(feature_names)}] FP32 tensor of features in the order "
            f"{feature_names}, got shape {list(matrix.shape)}"
        )
    n = matrix.shape[0]
    if n == 0:
        raise InvalidRequestError("the tensor has no rows")
    check_rows(n, max_rows)
    bad = np.argwhere(~np.isfinite(matrix))
    if len(bad):
        r, c = (int(x) for x in bad[0])
        raise InvalidRequestError(
            f"row {r} column {c} ({feature_names[c]}) is {matrix[r, c]}; features must be finite"
        )
