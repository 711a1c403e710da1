"""`loopline score`: batch scoring with a registered model and the shared feature code.

The model is loaded the way serving loads it: bytes checked against the
manifest's sha256, the feature set's fingerprint and feature order checked
against the manifest, and the golden rows re-scored. Inputs, by columns:

- ``features`` (a list of floats in the manifest's order): scored as given;
- every name of the manifest's ``feature_names`` as a column: scored as given;
- the columns of the model's scored event source (as its repo declares
  them): each row gets the features as of just before its event time.
  Without a history the rows themselves are the history,
  replayed in event-time order (:func:`loopline.featurecore.features.replay`);
  with ``history`` (events), each row is a query against the events strictly
  older than it, and is not applied itself.

The output holds the input's scalar columns plus ``score``, ``model_name``,
``model_version`` (and ``features`` on request), in the input's row order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopline.contracts.definitions import EventSource
from loopline.contracts.errors import (
    ConfigError,
    FingerprintMismatchError,
    ModelError,
    ModelNotFoundError,
    SchemaError,
)
from loopline.featurecore.entity_state import EntityState, replay
from loopline.featurecore.event_schema import EventParser
from loopline.featurecore.features import FeatureSet
from loopline.registry.directory import ModelRegistry, ModelVersion
from loopline.storage.files import atomic_replace
from loopline.trainer.export import INPUT_NAME, SCORE_OUTPUTS, onnx_scores, session
from loopline.trainer.history import decode_events
from loopline.trainer.sources import file_rows

GOLDEN_TOLERANCE = 1e-6


@dataclass
class ScoringModel:
    version: ModelVersion
    fs: FeatureSet
    session: Any
    # The scored events' declared schema (event rows are decoded by it).
    source: EventSource

    @staticmethod
    def load(
        registry: ModelRegistry,
        model: str,
        fs: FeatureSet,
        source: EventSource,
        *,
        alias: str = "champion",
        version: str = "",
    ) -> ScoringModel:
        if version:
            mv = registry.get(model, version)
        else:
            found = registry.resolve(model, alias)
            if found is None:
                raise ModelNotFoundError(f"model {model!r} has no {alias!r} version")
            mv = found
        m = mv.manifest
        if m.fingerprint != fs.fingerprint:
            raise FingerprintMismatchError(
                f"{model} v{m.version} was trained on feature set {m.feature_set} with "
                f"fingerprint {m.fingerprint[:12]}..., the code has {fs.fingerprint[:12]}..."
            )
        if list(m.feature_names) != list(fs.model_features):
            raise FingerprintMismatchError(
                f"{model} v{m.version}: feature order differs from the code"
            )
        if (m.input_name, m.probability_output) != (INPUT_NAME, SCORE_OUTPUTS[m.task]):
            raise ModelError(f"{model} v{m.version}: unexpected input/output names")
        sm = ScoringModel(mv, fs, session(mv.read_verified()), source)
        sm.check_golden()
        return sm

    def check_golden(self) -> None:
        m = self.version.manifest
        if not m.golden_inputs:
            return
        got = self.score(np.asarray(m.golden_inputs, dtype=np.float32))
        want = np.asarray(m.golden_scores)
        diff = float(np.max(np.abs(got - want)))
        if m.task != "binary":  # float32 loses absolute digits on large targets
            diff /= max(1.0, float(np.max(np.abs(want))))
        if diff > GOLDEN_TOLERANCE:
            raise ModelError(f"{m.model_name} v{m.version}: golden scores off by {diff:.3g}")

    def score(self, x: np.ndarray) -> np.ndarray:
        return onnx_scores(self.session, x, self.version.manifest.task)


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    failed: int
    model_name: str
    model_version: str
    mode: str
    output: Path
    mean_score: float


@dataclass(frozen=True)
class Inputs:
    mode: str  # "features" | "columns" | "replay" | "as-of"
    x: np.ndarray  # float32 [rows, features]; a row with an error holds zeros
    errors: list[str | None]

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def score_file(
    model: ScoringModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    history: str | Path | None = None,
    with_features: bool = False,
) -> ScoreSummary:
    """Score a Parquet (or JSONL) file of feature vectors or events; write a Parquet of scores."""
    table = _read_table(input_path)
    inputs = features_for(model.fs, table, history, model.source)
    ok = inputs.ok
    scores = np.full(len(table), np.nan)
    if ok.any():
        scores[ok] = model.score(inputs.x[ok])
    m = model.version.manifest
    replaced = [n for n in (*OUTPUT_COLUMNS, "features", "error") if n in table.column_names]
    out = table.drop_columns(replaced)
    scalar = [n for n in out.column_names if not pa.types.is_nested(out.schema.field(n).type)]
    out = out.select(scalar)
    n = len(scores)
    out = out.append_column("score", pa.array(scores, pa.float64(), mask=~ok))
    out = out.append_column("model_name", pa.array([m.model_name] * n, pa.string()))
    out = out.append_column("model_version", pa.array([m.version] * n, pa.string()))
    if with_features:
        vectors = [v if good else None for v, good in zip(inputs.x.tolist(), ok, strict=True)]
        out = out.append_column("features", pa.array(vectors, pa.list_(pa.float64())))
    if not ok.all():
        out = out.append_column("error", pa.array(inputs.errors, pa.string()))
    out = out.replace_schema_metadata(
        {"model_name": m.model_name, "model_version": m.version, "fingerprint": m.fingerprint}
    )
    _write_atomic(out, Path(output_path))
    return ScoreSummary(
        rows=n,
        failed=int((~ok).sum()),
        model_name=m.model_name,
        model_version=m.version,
        mode=inputs.mode,
        output=Path(output_path),
        mean_score=float(scores[ok].mean()) if ok.any() else 0.0,
    )


OUTPUT_COLUMNS = ("score", "model_name", "model_version")


def features_for(
    fs: FeatureSet,
    table: pa.Table,
    history: str | Path | None = None,
    source: EventSource | None = None,
) -> Inputs:
    """The model inputs (float32) for each row, and which input mode applied.

    Event rows (and ``history``) are of ``source``, the scored events: a
    model whose views read other sources too gets their defaults here.
    """
    names = list(fs.model_features)
    k = len(names)
    x = np.zeros((len(table), k), dtype=np.float32)
    errors: list[str | None] = [None] * len(table)
    if "features" in table.column_names:
        for i, v in enumerate(table["features"].to_pylist()):
            if v is None or len(v) != k:
                errors[i] = f"features must hold {k} values"
            elif not all(isinstance(f, int | float) and math.isfinite(f) for f in v):
                errors[i] = "features must be finite numbers"
            else:
                x[i] = v
        return Inputs("features", x, errors)
    if all(n in table.column_names for n in names):
        cols = [table[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in names]
        full = np.column_stack(cols).reshape(-1, k)
        for bad in np.flatnonzero(~np.isfinite(full).all(axis=1)).tolist():
            errors[bad] = "feature columns must be finite numbers"
        x[:] = np.nan_to_num(full).astype(np.float32)
        return Inputs("columns", x, errors)
    if source is None:
        raise ConfigError("scoring event rows needs the model's scored event source")
    parser = EventParser(source)
    time_field = source.event_time
    events: list[dict[str, Any] | None] = []
    for i, row in enumerate(table.to_pylist()):
        try:
            record = dict(row)
            parser.check(record)
            events.append(record)
        except SchemaError as e:
            events.append(None)
            errors[i] = str(e)
    if history is None:
        _replayed(fs, events, x, time_field)
        return Inputs("replay", x, errors)
    past, _ = decode_events(source, file_rows(history))
    _as_of(fs, past, events, x, time_field)
    return Inputs("as-of", x, errors)


def _replayed(
    fs: FeatureSet, events: list[dict[str, Any] | None], x: np.ndarray, time_field: str
) -> None:
    valid = sorted((e[time_field], i) for i, e in enumerate(events) if e is not None)
    order = [i for _, i in valid]
    records = (events[i] for i in order)
    for i, row in zip(order, replay(fs, records), strict=True):  # type: ignore[arg-type]
        x[i] = row.features


def _as_of(
    fs: FeatureSet,
    history: Iterable[dict[str, Any]],
    queries: list[dict[str, Any] | None],
    x: np.ndarray,
    time_field: str,
) -> None:
    past = sorted(history, key=lambda e: e[time_field])
    valid = sorted((q[time_field], i) for i, q in enumerate(queries) if q is not None)
    states: dict[tuple[str, str], EntityState] = {}
    j = 0
    for t_ms, i in valid:
        record = queries[i]
        assert record is not None
        # Only events strictly older than the query feed its features.
        while j < len(past) and past[j][time_field] < t_ms:
            ev = past[j]
            for view in fs.views:
                key = (view.entity, view.entity_id(ev))
                st = states.get(key)
                if st is None:
                    st = states[key] = EntityState(view)
                st.update(ev, ev[time_field] / 1000.0)
            j += 1
        t = t_ms / 1000.0
        stored = {}
        for view in fs.views:
            st = states.get((view.entity, view.entity_id(record)))
            stored[view.entity] = st.values(t) if st is not None else None
        x[i] = fs.assemble(stored, record, request_time=t)


def _read_table(path: str | Path) -> pa.Table:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such file: {p}")
    if p.suffix == ".parquet":
        return pq.read_table(p)
    return pa.Table.from_pylist([json.loads(r) for r in file_rows(p)])  # type: ignore[arg-type]


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_replace(path) as tmp:
        pq.write_table(table, tmp)
