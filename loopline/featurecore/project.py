"""A feature repo's definitions, checked across objects and compiled for the runtime.

:class:`Project` holds what a definitions module declares (entities, event
sources, feature views, models). :meth:`Project.feature_set` compiles a
model's features into the :class:`~loopline.featurecore.features.FeatureSet`
the features dataflow and the trainer's replay both run; the event schemas
become decoders (:mod:`loopline.featurecore.event_schema`). Cross-object faults
(a view aggregating a field its source lacks, a model reading an unknown
feature) raise :class:`DefinitionError` naming the object and the fix.

>>> from loopline.contracts.definitions import *
>>> user = Entity("user", key="user_id")
>>> clicks = EventSource("clicks", topic="clicks", fields=(
...     Field("click_id", "string"), Field("user_id", "string"),
...     Field("price", "float", ge=0), Field("ts", "timestamp")),
...     event_id="click_id", event_time="ts")
>>> view = FeatureView("user", entities=(user,), source=clicks, features=(
...     Aggregate("clicks_1h", "count", window="1h"),
...     Aggregate("spend_1h", "sum", "price", window="1h"),
... ))
>>> model = Model("spend", features=(view, "price"), scores=clicks,
...               request=(RequestField("price"),),
...               outcomes=Outcomes("purchases", task="regression", on_timeout="drop"))
>>> project = Project.of("shop", [user, clicks, view, model])
>>> fs = project.feature_set()
>>> fs.model_features
('user.clicks_1h', 'user.spend_1h', 'price')
>>> project.model().task, project.topics_read()
('regression', ('clicks',))
>>> Project.of("shop", [Model("m", features=("user.nope",), scores=clicks,
...     outcomes=Outcomes("o")), view]).feature_set()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
loopline.contracts.errors.DefinitionError: definitions.py: Model 'm': feature 'user.nope' is ...
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from loopline.contracts.definitions import (
    NUMERIC_AGGREGATES,
    Aggregate,
    Entity,
    EventSource,
    FeatureView,
    Field,
    Filter,
    Model,
    RequestField,
    Transform,
)
from loopline.contracts.errors import DefinitionError
from loopline.featurecore.compile import compile_model
from loopline.featurecore.features import FeatureSet

T = TypeVar("T")


@dataclass(frozen=True)
class Project:
    """Everything a feature repo declares, checked as a whole."""

    name: str
    entities: tuple[Entity, ...]
    sources: tuple[EventSource, ...]
    views: tuple[FeatureView, ...]
    models: tuple[Model, ...]
    root: Path | None = None
    definitions_file: str = "definitions.py"
    _compiled: dict[str, FeatureSet] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def of(
        name: str, objects: Iterable[Any], root: Path | None = None, file: str = "definitions.py"
    ) -> Project:
        """Collect the declared objects (and those they refer to), then check them."""
        found: dict[type, dict[str, Any]] = {
            Entity: {},
            EventSource: {},
            FeatureView: {},
            Model: {},
        }

        def add(obj: Any) -> None:
            kind = type(obj)
            if kind not in found:
                return
            same = found[kind].get(obj.name)
            if same is not None and same is not obj and same != obj:
                raise DefinitionError(
                    f"{file}: two different {kind.__name__} objects are named {obj.name!r}; "
                    "rename one"
                )
            found[kind].setdefault(obj.name, obj)
            if isinstance(obj, FeatureView):
                add(obj.source)
                for e in obj.entities:
                    add(e)
            elif isinstance(obj, Model):
                add(obj.scores)
                for f in obj.features:
                    add(f)

        for obj in objects:
            add(obj)
        project = Project(
            name=name,
            entities=tuple(found[Entity].values()),
            sources=tuple(found[EventSource].values()),
            views=tuple(found[FeatureView].values()),
            models=tuple(found[Model].values()),
            root=root,
            definitions_file=file,
        )
        project.check()
        return project

    # -- lookups ---------------------------------------------------------------
    def model(self, name: str | None = None) -> Model:
        """The named model, or the repo's first one when ``name`` is empty."""
        if not self.models:
            raise DefinitionError(f"{self.definitions_file}: declares no Model; add one")
        return self.models[0] if not name else self._named(self.models, "Model", name)

    def view(self, name: str) -> FeatureView:
        return self._named(self.views, "FeatureView", name)

    def source(self, name: str) -> EventSource:
        return self._named(self.sources, "EventSource", name)

    def _named(self, items: tuple[T, ...], kind: str, name: str) -> T:
        for item in items:
            if item.name == name:  # type: ignore[attr-defined]
                return item
        declared = [item.name for item in items]  # type: ignore[attr-defined]
        raise DefinitionError(
            f"{self.definitions_file}: no {kind} named {name!r}; declared: {declared}"
        )

    def source_of_topic(self, topic: str) -> EventSource:
        """The event source on ``topic`` (the unprefixed name the repo declares)."""
        for s in self.sources:
            if s.topic == topic:
                return s
        raise DefinitionError(f"{self.definitions_file}: no EventSource reads topic {topic!r}")

    def views_of(self, model: str | None = None) -> tuple[FeatureView, ...]:
        """The views a model reads, in the order it first names them."""
        m = self.model(model)
        out: dict[str, FeatureView] = {}
        for ref in (*m.features, *(i for t in m.transforms for i in t.inputs)):
            if isinstance(ref, FeatureView):
                out.setdefault(ref.name, ref)
            elif isinstance(ref, str) and "." in ref:
                v = self.view(ref.split(".", 1)[0])
                out.setdefault(v.name, v)
        return tuple(out.values())

    def topics_read(self, model: str | None = None) -> tuple[str, ...]:
        """The (unprefixed) event topics the features flow reads for a model."""
        return tuple(dict.fromkeys(v.source.topic for v in self.views_of(model)))

    def topics(self) -> tuple[str, ...]:
        """Every (unprefixed) topic the repo declares: event sources', then outcomes'."""
        names = [s.topic for s in self.sources] + [m.outcomes.topic for m in self.models]
        return tuple(dict.fromkeys(names))

    def feature_set(self, model: str | None = None) -> FeatureSet:
        """The compiled feature set of a model (compiled once, then cached)."""
        m = self.model(model)
        fs = self._compiled.get(m.name)
        if fs is None:
            fs = self._compiled[m.name] = compile_model(self, m)
        return fs

    @cached_property
    def describe(self) -> dict[str, Any]:
        """Plain data for `loopline plan` and the applied-state file."""
        return {
            "project": self.name,
            "models": {
                m.name: {
                    "task": m.task,
                    "fingerprint": self.feature_set(m.name).fingerprint,
                    "features": list(self.feature_set(m.name).model_features),
                    "topics": [*self.topics_read(m.name), m.outcomes.topic],
                }
                for m in self.models
            },
        }

    # -- checks ------------------------------------------------------------------
    def check(self) -> None:
        """Cross-object checks; every fault names the object and the fix."""
        _check_topics(self)
        for view in self.views:
            _check_view(view, self.definitions_file)
        for m in self.models:
            self.feature_set(m.name)


def _check_topics(project: Project) -> None:
    # One topic, one schema: the flow decodes a topic with exactly one source's parser.
    file = project.definitions_file
    by_topic: dict[str, str] = {}
    for s in project.sources:
        other = by_topic.setdefault(s.topic, s.name)
        if other != s.name:
            raise DefinitionError(
                f"{file}: EventSources {other!r} and {s.name!r} both read topic {s.topic!r}; "
                "give each its own topic (or merge them into one source)"
            )
    for m in project.models:
        if m.outcomes.topic in by_topic:
            raise DefinitionError(
                f"{file}: Model {m.name!r}: outcomes topic {m.outcomes.topic!r} is also "
                f"EventSource {by_topic[m.outcomes.topic]!r}'s topic; outcomes need their own"
            )


def _check_view(view: FeatureView, file: str) -> None:
    where = f"{file}: FeatureView {view.name!r}"
    src = view.source
    for e in view.entities:
        if not src.has(e.key):
            raise DefinitionError(
                f"{where}: entity {e.name!r} is keyed by {e.key!r}, which EventSource "
                f"{src.name!r} does not declare; add Field({e.key!r}, {e.key_type!r}) to it"
            )
        if src.field(e.key).type not in ("string", "int") or src.field(e.key).optional:
            raise DefinitionError(
                f"{where}: key field {e.key!r} must be a required string or int field"
            )
        if src.field(e.key).type != e.key_type:
            raise DefinitionError(
                f"{where}: entity {e.name!r} has key_type {e.key_type!r} but EventSource "
                f"{src.name!r} declares {e.key!r} as {src.field(e.key).type}; make them agree"
            )
    for a in view.features:
        _check_aggregate(a, src, where)


def _check_aggregate(a: Aggregate, src: EventSource, where: str) -> None:
    here = f"{where}, Aggregate {a.name!r}"
    if a.field is not None:
        if not src.has(a.field):
            raise DefinitionError(
                f"{here}: reads field {a.field!r}, which EventSource {src.name!r} does not "
                f"declare (its fields: {[f.name for f in src.fields]}); fix the name or declare it"
            )
        f = src.field(a.field)
        if a.kind in NUMERIC_AGGREGATES and f.type not in ("int", "float", "timestamp", "bool"):
            raise DefinitionError(
                f"{here}: {a.kind} needs a numeric field, but {a.field!r} is {f.type}; "
                "use 'distinct' or 'count' with where= for string fields"
            )
        if f.optional:
            raise DefinitionError(
                f"{here}: field {a.field!r} is optional; aggregate a required field "
                "(or filter on it with where=)"
            )
    if a.where is not None and not src.has(a.where.field):
        raise DefinitionError(
            f"{here}: where= filters on {a.where.field!r}, which EventSource {src.name!r} "
            "does not declare"
        )
    if a.where is not None:
        _check_filter(a.where, src.field(a.where.field), here)


def _check_filter(flt: Filter, f: Field, here: str) -> None:
    """A filter whose value cannot match its field's type (or allowed values) never counts."""
    values = flt.value if flt.op == "in" else (flt.value,)
    numeric = f.type in ("int", "float", "timestamp")
    for v in values:
        is_number = isinstance(v, int | float) and not isinstance(v, bool)
        fits = is_number if numeric else isinstance(v, bool if f.type == "bool" else str)
        if not fits:
            raise DefinitionError(
                f"{here}: where= compares {f.name!r} ({f.type}) with {v!r}, which can never "
                f"match; compare it with a {f.type} value"
            )
        if f.allowed is not None and flt.op in ("==", "in") and v not in f.allowed:
            raise DefinitionError(
                f"{here}: where= compares {f.name!r} with {v!r}, which is not one of its "
                f"allowed values {f.allowed}; fix the value"
            )


__all__ = ["Project", "RequestField", "Transform"]
