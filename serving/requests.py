"""A scoring request as the core sees it, what comes back, and the checks a request passes.

Independent of the API a request arrived through: the gRPC adapters build a
:class:`PredictInput`; :class:`RequestCheck` refuses a bad one with a precise
:class:`~loopline.contracts.errors.InvalidRequestError`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loopline.contracts.errors import InvalidRequestError
from loopline.rollout.plan import ARMS, CHAMPION
from loopline.serving.features import FeatureStatus, LookupPlan
from loopline.serving.model import LoadedModel


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


class PredictionSink(Protocol):
    """Where served predictions go (the Kafka predictions topic); must not block."""

    def log(
        self,
        prediction: Prediction,
        event_time_ms: int,
        event_id: str,
        feature_names: Sequence[str],
    ) -> None: ...


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
        for name in inp.entities:
            if name not in self._key_fields:
                raise InvalidRequestError(
                    f"unknown entity field {name!r}; expected {sorted(self._key_fields)}"
                )
        for name in self._plan.key_fields:
            value = inp.entities.get(name, "")
            if not value:
                raise InvalidRequestError(f"entity field {name!r} is missing or empty")
            if len(value) > limit:
                raise InvalidRequestError(
                    f"entity field {name!r} is {len(value)} characters long (limit {limit})"
                )
        for name in inp.fields:
            if name not in self._request_fields:
                raise InvalidRequestError(
                    f"unknown field {name!r}; expected {sorted(self._request_fields)}"
                )
        for name in self._plan.request_fields:
            value = inp.fields.get(name)
            if value is None:
                raise InvalidRequestError(f"field {name!r} is missing")
            if not math.isfinite(value):
                raise InvalidRequestError(f"field {name!r} is {value}; it must be finite")
        if inp.arm and inp.arm not in ARMS:
            raise InvalidRequestError(
                f"arm {inp.arm!r} is not one of {('', *ARMS)}; '' follows the rollout plan"
            )
        if inp.event_time_ms < 0:
            raise InvalidRequestError(
                f"event_time_ms is {inp.event_time_ms}; use epoch milliseconds, or 0 for now"
            )
        return self._plan.entity_ids(inp.entities)
