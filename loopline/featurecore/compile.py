"""Compiling a repo's model into the feature engine's :class:`FeatureSet`.

Views become :class:`EntityView` (windows tiled, filters and composite keys
kept), request fields and transforms become :class:`Derived` features, and
``time_since`` becomes a stored ``last_time`` with an ``age`` at request time.
Every reference is resolved here, so a typo fails at ``plan``, not at serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loopline.contracts.definitions import Aggregate, FeatureView, Model
from loopline.contracts.errors import DefinitionError
from loopline.featurecore.features import Aggregation, Derived, EntityView, FeatureSet, Window

if TYPE_CHECKING:
    from loopline.featurecore.project import Project

DEFAULT_TILES = 12
# The feature engine's kind for each declared aggregate kind that differs.
_ENGINE_KIND = {"time_since": "last_time"}
_AGE_SUFFIX = "__t"


def _tiles(window_s: int, asked: int | None) -> int:
    if asked is not None:
        if window_s % asked:
            raise DefinitionError(f"a {window_s}s window cannot split into {asked} whole tiles")
        return asked
    # The most tiles up to DEFAULT_TILES that split the window into whole seconds.
    return next(n for n in range(DEFAULT_TILES, 0, -1) if window_s % n == 0)


def _entity_view(view: FeatureView, time_field: str) -> EntityView:
    tiles: dict[int, int] = {}
    aggs = []
    for a in view.features:
        w = a.window_s
        if w is not None:
            want = _tiles(w, a.tiles)
            if tiles.setdefault(w, want) != want:
                raise DefinitionError(
                    f"FeatureView {view.name!r}: aggregates over the {a.window} window ask for "
                    f"different tiles ({tiles[w]} and {want}); give them the same tiles="
                )
        kind = _ENGINE_KIND.get(a.kind, a.kind)
        name = a.name + _AGE_SUFFIX if a.kind == "time_since" else a.name
        where = None if a.where is None else (a.where.field, a.where.op, a.where.value)
        aggs.append(Aggregation(name, kind, a.field, w, a.default, where))  # type: ignore[arg-type]
    keys = view.key_fields
    src = view.source
    return EntityView(
        entity=view.name,
        key_field=keys[0],
        windows=tuple(Window(s, n) for s, n in sorted(tiles.items())),
        aggregations=tuple(aggs),
        key_fields=keys if len(keys) > 1 else (),
        source=None if src is None else src.name,
        time_field=None if src.event_time == time_field else src.event_time,
    )


def compile_model(project: Project, m: Model) -> FeatureSet:
    """The feature set of ``m``: its views, request fields and transforms, checked."""
    where = f"{project.definitions_file}: Model {m.name!r}"
    views = project.views_of(m.name)
    time_field = m.scores.event_time
    entity_views = [_entity_view(v, time_field) for v in views]
    # One source for everything: views need no source tag (and the fingerprint
    # stays what a single-topic feature set always had).
    single = all(v.source.name == m.scores.name for v in views)
    if single:
        entity_views = [
            EntityView(ev.entity, ev.key_field, ev.windows, ev.aggregations, ev.key_fields)
            for ev in entity_views
        ]
    for v in views:
        for key in v.key_fields:
            if not m.scores.has(key):
                raise DefinitionError(
                    f"{where}: scores EventSource {m.scores.name!r} lacks key field {key!r} of "
                    f"FeatureView {v.name!r}; a scored event must name every entity it reads"
                )
    derived: list[Derived] = []
    for r in m.request:
        if not m.scores.has(r.name):
            raise DefinitionError(
                f"{where}: request field {r.name!r} is not a field of EventSource "
                f"{m.scores.name!r}; declare it there (training replays those events)"
            )
        if m.scores.field(r.name).type not in ("int", "float", "bool"):
            raise DefinitionError(
                f"{where}: request field {r.name!r} is {m.scores.field(r.name).type} in "
                f"EventSource {m.scores.name!r}; a RequestField must be a number or a bool "
                "(count string values with an Aggregate's where= instead)"
            )
        derived.append(Derived(r.name, "field", (r.name,), r.default or 0.0))
    request_names = {r.name for r in m.request}
    transform_names = {t.name for t in m.transforms}
    for t in m.transforms:
        for i in t.inputs:
            _resolve(
                project,
                i,
                request=request_names,
                transforms=transform_names - {t.name},
                where=where,
            )
        derived.append(Derived(t.name, t.kind, t.inputs, t.default))  # type: ignore[arg-type]
    ages: dict[str, Derived] = {}
    names: list[str] = []
    for ref in m.features:
        if isinstance(ref, FeatureView):
            names += [f"{ref.name}.{a.name}" for a in ref.features]
        elif isinstance(ref, str):
            _resolve(project, ref, request=request_names, transforms=transform_names, where=where)
            names.append(ref)
        else:
            raise DefinitionError(
                f"{where}: features= entries are FeatureViews or names "
                f"('view.feature', a request field, a transform), not {type(ref).__name__}"
            )
    for name in names:
        view_name, _, agg = name.partition(".")
        if agg and _aggregate(project.view(view_name), agg).kind == "time_since":
            ages[name] = Derived(name, "age", (name + _AGE_SUFFIX,), -1.0)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DefinitionError(f"{where}: feature {dup[0]!r} is listed twice")
    unwatched = sorted(set(m.drift.features or ()) - set(names))
    if unwatched:
        raise DefinitionError(
            f"{where}: Drift(features=...) names {unwatched}, which are not model features; "
            "list names from features="
        )
    return FeatureSet(
        name=m.name,
        version=1,
        views=tuple(entity_views),
        derived=(*derived, *ages.values()),
        model_features=tuple(names),
        event_time_field=time_field,
        scored_source=None if single else m.scores.name,
    )


def _aggregate(view: FeatureView, name: str) -> Aggregate:
    for a in view.features:
        if a.name == name:
            return a
    raise DefinitionError(
        f"feature {view.name}.{name!r} is not an aggregate of FeatureView {view.name!r}"
    )


def _resolve(
    project: Project,
    ref: str,
    *,
    request: set[str],
    transforms: set[str],
    where: str,
) -> None:
    if "." in ref:
        view_name, _, agg = ref.partition(".")
        view = project.view(view_name)
        if not any(a.name == agg for a in view.features):
            have = ", ".join(a.name for a in view.features)
            raise DefinitionError(
                f"{where}: feature {ref!r} is not an aggregate of "
                f"FeatureView {view_name!r} (it has: {have})"
            )
        return
    if ref not in request and ref not in transforms:
        raise DefinitionError(
            f"{where}: feature {ref!r} is neither 'view.aggregate', a RequestField in "
            "request= nor a Transform in transforms=; declare it"
        )
