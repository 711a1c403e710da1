"""A model version ready to serve: verified, fingerprint-checked, warmed, golden-checked.

:func:`load_model` does everything that may fail or take time, so that a
:class:`LoadedModel` in hand is known good; it runs off the request path.
The session is tuned for single-row latency: one intra-op thread, sequential
execution (a thread pool costs more than a 200-tree ensemble takes to run).

The manifest's ``task`` says what the output holds: a binary model's
``probabilities`` ``[n, 2]`` (serving keeps column 1, the positive class), a
regression model's values ``[n, 1]`` (flattened). Either way a model gives
one float score per row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from loopline.contracts.errors import FingerprintMismatchError, ModelError
from loopline.contracts.tasks import TASKS
from loopline.featurecore.features import FeatureSet
from loopline.registry.directory import Manifest, ModelVersion

WARMUP_RUNS = 20
# Width of the output each task's model answers with.
OUTPUT_WIDTH = {"binary": 2, "regression": 1}


def session_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The LightGBM converter declares `label` as [1]; batches make ORT warn on every run.
    so.log_severity_level = 3
    return so


@dataclass(eq=False)
class LoadedModel:
    """One model version with its ONNX session and what serving needs to feed it."""

    manifest: Manifest
    session: ort.InferenceSession
    # Feature-set vector position of each model input column (None: same order).
    permutation: tuple[int, ...] | None = None
    outputs: list[str] = field(default_factory=list)
    # Binary: keep column 1 of [n, 2]; regression: flatten [n, 1]. Set once, read per request.
    binary: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        self.binary = self.manifest.task != "regression"

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def n_features(self) -> int:
        return len(self.manifest.feature_names)

    def order(self, vector: Sequence[float]) -> list[float]:
        """The feature-set vector rearranged into the model's input order."""
        if self.permutation is None:
            return vector if isinstance(vector, list) else list(vector)
        return [vector[i] for i in self.permutation]

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """One score per row of a float32 ``[n, k]`` matrix: the positive-class
        probability (binary) or the predicted value (regression)."""
        out = self.session.run(self.outputs, {self.manifest.input_name: matrix})[0]
        return out[:, 1] if self.binary else out.reshape(-1)

    # The name the serving core calls; for a regression model it gives values.
    probabilities = scores

    def timed_probabilities(self, matrix: np.ndarray) -> tuple[np.ndarray, float, float]:
        """:meth:`probabilities` with its wall time and this thread's CPU time (seconds).

        The session runs on the calling thread (one intra-op thread), so the
        CPU time is the model's own cost: unlike the wall time, it excludes
        waiting for the GIL or a core, which differs between a request thread
        and the shadow thread.
        """
        w0, c0 = time.perf_counter(), time.thread_time()
        out = self.probabilities(matrix)
        return out, time.perf_counter() - w0, time.thread_time() - c0


def load_model(
    version: ModelVersion, feature_set: FeatureSet, golden_tolerance: float
) -> LoadedModel:
    """Verify, check, build and warm a session; raises instead of returning a bad model.

    Raises :class:`SignatureError` (unsigned or wrongly signed, when the
    registry has a key), :class:`IntegrityError` (sha256),
    :class:`FingerprintMismatchError` (built for another feature set) or
    :class:`ModelError` (unloadable, wrong inputs or outputs, golden scores
    not reproduced).
    """
    m = version.manifest
    label = f"{m.model_name} v{m.version}"
    # First: nothing else an unsigned manifest states is worth acting on.
    version.check_signature()
    check_compatible(m, feature_set)
    onnx_bytes = version.read_verified()
    try:
        session = ort.InferenceSession(
            onnx_bytes, session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own hierarchy (Fail, InvalidGraph, ...)
        raise ModelError(f"{label}: onnxruntime cannot load the model: {e}") from e
    inputs = {i.name: i for i in session.get_inputs()}
    if m.input_name not in inputs:
        raise ModelError(f"{label}: the model has no input {m.input_name!r} (has {sorted(inputs)})")
    shape = inputs[m.input_name].shape
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(m.feature_names)):
        raise ModelError(
            f"{label}: input {m.input_name!r} has shape {shape}, "
            f"expected [n, {len(m.feature_names)}] for {len(m.feature_names)} features"
        )
    check_output(label, m, session)
    model = LoadedModel(
        manifest=m,
        session=session,
        permutation=_permutation(feature_set.model_features, m.feature_names),
        outputs=[m.probability_output],
    )
    _warm(model)
    check_golden(model, golden_tolerance)
    return model


def check_output(label: str, m: Manifest, session: ort.InferenceSession) -> None:
    """The output the manifest names must exist with its task's width ([n, 2] or [n, 1])."""
    if m.task not in TASKS:
        raise ModelError(f"{label}: the manifest's task {m.task!r} is not one of {list(TASKS)}")
    outputs = {o.name: o for o in session.get_outputs()}
    if m.probability_output not in outputs:
        raise ModelError(
            f"{label}: the model has no output {m.probability_output!r} ({list(outputs)})"
        )
    shape = outputs[m.probability_output].shape
    width = OUTPUT_WIDTH[m.task]
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
        raise ModelError(
            f"{label}: output {m.probability_output!r} has shape {shape}; a {m.task} model "
            f"must answer [n, {width}]"
        )


def check_compatible(m: Manifest, fs: FeatureSet) -> None:
    """Refuse a model built for another feature set than the one the store holds."""
    if m.feature_set != fs.name or m.fingerprint != fs.fingerprint:
        raise FingerprintMismatchError(
            f"{m.model_name} v{m.version} was built for feature set {m.feature_set!r} "
            f"(fingerprint {m.fingerprint[:12]}), but this server reads {fs.name!r} "
            f"v{fs.version} (fingerprint {fs.fingerprint[:12]}); refusing it"
        )
    unknown = [n for n in m.feature_names if n not in fs.model_features]
    if unknown:
        raise FingerprintMismatchError(
            f"{m.model_name} v{m.version} names features the feature set {fs.name!r} "
            f"does not define: {unknown}"
        )


def check_golden(model: LoadedModel, tolerance: float) -> None:
    """The session must reproduce the scores its publisher recorded."""
    m = model.manifest
    if len(m.golden_inputs) != len(m.golden_scores):
        raise ModelError(
            f"{m.model_name} v{m.version}: {len(m.golden_inputs)} golden inputs but "
            f"{len(m.golden_scores)} golden scores"
        )
    if not m.golden_inputs:
        return
    matrix = np.asarray(m.golden_inputs, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != model.n_features:
        raise ModelError(f"{m.model_name} v{m.version}: golden inputs have shape {matrix.shape}")
    got = model.scores(matrix)
    # A regression value has no fixed scale: the tolerance is relative there too.
    rel_tol = 0.0 if model.binary else tolerance
    for i, (want, have) in enumerate(zip(m.golden_scores, got, strict=True)):
        if not math.isclose(float(have), want, rel_tol=rel_tol, abs_tol=tolerance):
            raise ModelError(
                f"{m.model_name} v{m.version}: golden row {i} scored {float(have):.6f}, "
                f"the manifest says {want:.6f} (tolerance {tolerance})"
            )


def _warm(model: LoadedModel) -> None:
    # First runs allocate and pick kernels; pay that here, not on a request.
    row = np.zeros((1, model.n_features), dtype=np.float32)
    if model.manifest.golden_inputs:
        row[0] = np.asarray(model.manifest.golden_inputs[0], dtype=np.float32)
    for _ in range(WARMUP_RUNS):
        model.probabilities(row)
    model.probabilities(np.repeat(row, 8, axis=0))


def _permutation(fs_order: Sequence[str], model_order: Sequence[str]) -> tuple[int, ...] | None:
    if tuple(fs_order) == tuple(model_order):
        return None
    index = {name: i for i, name in enumerate(fs_order)}
    return tuple(index[name] for name in model_order)
