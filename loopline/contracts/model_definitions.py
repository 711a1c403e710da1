"""The model side of the definition language: request fields, transforms, outcomes, models.

Re-exported by :mod:`loopline.contracts.definitions`, which users import.

>>> Outcomes("done", task="regression", on_timeout="drop").maturity_s
86400
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from loopline.contracts.errors import DefinitionError
from loopline.contracts.feature_definitions import (
    GATE_METRICS,
    MODEL_PARAMS,
    TRANSFORM_ARITY,
    EventSource,
    Field,
    check_name,
    parse_duration,
)
from loopline.contracts.tasks import TASKS


@dataclass(frozen=True)
class RequestField:
    """A numeric field of the scored event / inference request, used as a feature."""

    name: str
    type: str = "float"
    default: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DefinitionError("RequestField needs a name")
        if self.type not in ("float", "int", "bool"):
            raise DefinitionError(
                f"RequestField {self.name!r}: type {self.type!r} must be float, int or bool"
            )


@dataclass(frozen=True)
class Transform:
    """A row transformation computed at request time (and in replay).

    ``inputs`` name request fields (bare names) or stored features
    (``view.feature``); ``ratio`` and ``difference``/``product`` take two,
    ``log1p`` (of max(x, 0)) and ``age`` (request time minus a stored time)
    one. ``default`` answers a ratio over 0 or an age of nothing.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    default: float = 0.0

    def __post_init__(self) -> None:
        check_name("Transform", self.name)
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.kind not in TRANSFORM_ARITY:
            raise DefinitionError(
                f"Transform {self.name!r}: kind {self.kind!r} must be one of "
                f"{tuple(TRANSFORM_ARITY)}"
            )
        n = TRANSFORM_ARITY[self.kind]
        if len(self.inputs) != n:
            raise DefinitionError(
                f"Transform {self.name!r}: {self.kind} takes {n} input(s), got {len(self.inputs)}"
            )


@dataclass(frozen=True)
class Outcomes:
    """Where labels come from and what they mean.

    Outcome events on ``topic`` carry ``event_id`` (the scored event's id)
    and ``label`` (0/1 for ``binary``, a number for ``regression``). A
    scored event whose outcome has not arrived ``maturity`` after it is
    resolved by ``on_timeout``: ``negative`` (label 0: binary only, the
    fraud convention: no chargeback means legitimate) or ``drop``.
    """

    topic: str
    event_id: str = "event_id"
    label: str = "label"
    event_time: str = "event_time"
    task: str = "binary"
    maturity: str | int = "24h"
    on_timeout: str = "negative"
    name: str = "outcomes"

    def __post_init__(self) -> None:
        where = f"Outcomes {self.name!r}"
        if self.task not in TASKS:
            raise DefinitionError(f"{where}: task {self.task!r} must be one of {TASKS}")
        if self.on_timeout not in ("negative", "positive", "drop"):
            raise DefinitionError(f"{where}: on_timeout must be negative, positive or drop")
        if self.task == "regression" and self.on_timeout != "drop":
            raise DefinitionError(
                f"{where}: a regression label has no default; set on_timeout='drop'"
            )
        if parse_duration(self.maturity, f"{where}: maturity") <= 0:
            raise DefinitionError(f"{where}: maturity must be positive")
        if not re.match(r"^[A-Za-z0-9._-]+$", self.topic or ""):
            raise DefinitionError(f"{where}: topic {self.topic!r} must be letters, digits, . _ -")
        roles = {"event_id": self.event_id, "label": self.label, "event_time": self.event_time}
        for role, name in roles.items():
            if not isinstance(name, str) or not name:
                raise DefinitionError(f"{where}: {role} must name a field of the outcome events")
        if len(set(roles.values())) < len(roles):
            raise DefinitionError(f"{where}: event_id, label and event_time must be three fields")

    @property
    def maturity_s(self) -> int:
        return parse_duration(self.maturity)

    def fields(self) -> tuple[Field, ...]:
        label_type = "int" if self.task == "binary" else "float"
        return (
            Field(self.event_id, "string"),
            Field(self.label, label_type, **({"allowed": (0, 1)} if self.task == "binary" else {})),
            Field(self.event_time, "timestamp"),
        )


@dataclass(frozen=True)
class Drift:
    """What the drift flow watches for a model; each switch turns one detector family on."""

    error: bool = True  # concept drift: binary error rate, or absolute residual (regression)
    prediction: bool = True
    features: tuple[str, ...] | None = None  # None: every model feature


@dataclass(frozen=True)
class Retrain:
    """When the policy asks for a retrain (seconds or durations)."""

    on_drift: bool = True
    schedule: str | int | None = "1d"
    min_new_rows: int = 1000
    min_interval: str | int = "1h"


@dataclass(frozen=True)
class Model:
    """A model: the features it reads (in order), the scored events, the task and its gate.

    ``features`` lists views (all their aggregates), ``view.feature`` names,
    request field names and transform names. ``scores`` is the event source
    whose events are scored: its fields are the request fields and its
    ``event_id`` joins predictions with outcomes. The gate compares the
    task's metrics with the champion's (margins in the ``trainer`` settings);
    ``gate_metric`` must also improve by ``min_improvement`` when that is
    above 0. ``params`` sets training hyper-parameters (``num_trees``,
    ``num_leaves``, ``learning_rate``, ``min_data_in_leaf``,
    ``early_stopping_rounds``), each a ``trainer`` setting of that name.
    """

    name: str
    features: tuple[Any, ...]
    scores: EventSource
    outcomes: Outcomes
    request: tuple[RequestField, ...] = ()
    transforms: tuple[Transform, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    gate_metric: str | None = None
    min_improvement: float = 0.0
    drift: Drift = field(default_factory=Drift)
    retrain: Retrain = field(default_factory=Retrain)
    description: str = ""

    def __post_init__(self) -> None:
        check_name("Model", self.name)
        for attr in ("features", "request", "transforms"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        where = f"Model {self.name!r}"
        if not self.features:
            raise DefinitionError(f"{where}: features= needs at least one feature")
        metrics = GATE_METRICS[self.outcomes.task]
        if self.gate_metric is not None and self.gate_metric not in metrics:
            raise DefinitionError(
                f"{where}: gate_metric {self.gate_metric!r} does not fit task "
                f"{self.outcomes.task!r}; use one of {metrics}"
            )
        if self.min_improvement < 0:
            raise DefinitionError(f"{where}: min_improvement must be >= 0")
        unknown = sorted(set(self.params) - set(MODEL_PARAMS))
        if unknown:
            raise DefinitionError(
                f"{where}: unknown params {unknown}; use any of {list(MODEL_PARAMS)}"
            )

    @property
    def task(self) -> str:
        return self.outcomes.task

    @property
    def primary_metric(self) -> str:
        return self.gate_metric or GATE_METRICS[self.task][0]
