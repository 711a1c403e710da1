"""The definition language of feature repos: import everything from here.

A repo's definitions module builds these frozen objects: entities, event
sources and feature views (:mod:`loopline.contracts.feature_definitions`),
request fields, transforms, outcomes and models
(:mod:`loopline.contracts.model_definitions`). Loopline compiles them
(:mod:`loopline.featurecore.project`) into what the dataflow, serving and the
trainer run. Each object checks itself on construction and raises
:class:`~loopline.contracts.errors.DefinitionError` naming it and the fix.
"""

from loopline.contracts.feature_definitions import (
    AGGREGATE_KINDS,
    FIELD_TYPES,
    GATE_METRICS,
    MODEL_PARAMS,
    NUMERIC_AGGREGATES,
    TRANSFORM_ARITY,
    Aggregate,
    Entity,
    EventSource,
    FeatureView,
    Field,
    Filter,
    parse_duration,
)
from loopline.contracts.model_definitions import (
    Drift,
    Model,
    Outcomes,
    RequestField,
    Retrain,
    Transform,
)
from loopline.contracts.tasks import TASKS

__all__ = [
    "AGGREGATE_KINDS", "FIELD_TYPES", "GATE_METRICS", "MODEL_PARAMS", "NUMERIC_AGGREGATES",
    "TASKS", "TRANSFORM_ARITY", "Aggregate", "Drift", "Entity", "EventSource", "FeatureView",
    "Field", "Filter", "Model", "Outcomes", "RequestField", "Retrain", "Transform",
    "parse_duration",
]  # fmt: skip
