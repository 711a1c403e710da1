"""LightGBM to ONNX, and the parity check that guards every publish.

The exported graph takes ``input`` (float32, ``[None, n_features]``). A binary
model returns ``label`` and ``probabilities`` (``[None, 2]``, column 1 =
positive class); a regression model returns ``variable`` (``[None, 1]``, the
predicted value): the output the registry manifest records and serving reads.
The task is read from the booster's own objective.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType

from loopline.contracts.errors import ModelError
from loopline.featurecore.features import FeatureSet
from loopline.trainer.errors import ParityError

INPUT_NAME = "input"
PROBABILITY_OUTPUT = "probabilities"
# The output each task's exported graph holds its scores in (onnxmltools' names).
SCORE_OUTPUTS = {"binary": PROBABILITY_OUTPUT, "regression": "variable"}
# LightGBM objectives whose raw prediction is the regression value onnxmltools exports.
REGRESSION_OBJECTIVES = frozenset(
    {
        "regression",
        "regression_l1",
        "huber",
        "fair",
        "quantile",
        "mape",
        "poisson",
        "gamma",
        "tweedie",
    }
)
# onnxmltools 1.16 with onnx 1.23 refuses opset 17; 15 works.
TARGET_OPSET = 15

Exporter = Callable[[lgb.Booster, FeatureSet], bytes]


def to_onnx(booster: lgb.Booster, fs: FeatureSet) -> bytes:
    """The booster as a serialized ONNX model, with the feature set in its metadata."""
    n = booster.num_feature()
    if n != len(fs.model_features):
        raise ModelError(
            f"booster has {n} features, feature set {fs.name} has {len(fs.model_features)}"
        )
    text = booster.model_to_string()
    task = booster_task(text)
    exact = lgb.Booster(model_str=float32_exact_thresholds(text))
    model = convert_lightgbm(
        exact,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n]))],
        target_opset=TARGET_OPSET,
        zipmap=False,
    )
    outputs = [o.name for o in model.graph.output]
    if SCORE_OUTPUTS[task] not in outputs:
        raise ModelError(
            f"exported {task} model has outputs {outputs}, expected {SCORE_OUTPUTS[task]!r}"
        )
    meta = {
        "task": task,
        "feature_set": fs.name,
        "fingerprint": fs.fingerprint,
        "feature_names": json.dumps(list(fs.model_features)),
    }
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model.SerializeToString()


def booster_task(model_str: str) -> str:
    r"""The task a LightGBM model text was trained for, from its ``objective=`` line.

    >>> booster_task("tree\nobjective=binary sigmoid:1\n"), booster_task("objective=huber\n")
    ('binary', 'regression')
    """
    line = next((x for x in model_str.split("\n") if x.startswith("objective=")), "objective=")
    objective = line.removeprefix("objective=").split(" ")[0]
    if objective == "binary":
        return "binary"
    if objective in REGRESSION_OBJECTIVES:
        return "regression"
    raise ModelError(
        f"cannot export a model with LightGBM objective {objective!r}; train with "
        "objective 'binary' or a regression objective"
    )


def float32_exact_thresholds(model_str: str) -> str:
    r"""The same model text with every numerical threshold rounded down to a float32.

    ONNX tree ensembles hold float32 thresholds, rounded to nearest: a double
    threshold just below a float32 input value can round up past it and send
    that input down the other branch. For a float32 ``x``, ``x <= t`` equals
    ``x <= round_down_f32(t)``, so this rewrite changes no prediction on the
    float32 inputs serving sends, and the export becomes exact.

    >>> text = "Tree=0\nthreshold=9.769999980926515 0.5\ndecision_type=2 1\n"
    >>> print(float32_exact_thresholds(text), end="")
    Tree=0
    threshold=9.769999504089355 0.5
    decision_type=2 1
    """
    # Byte sizes of the tree blocks change with the text; LightGBM parses
    # tree by tree without them.
    lines = [x for x in model_str.split("\n") if not x.startswith("tree_sizes=")]
    for i, line in enumerate(lines):
        if not line.startswith("threshold="):
            continue
        types = next((x for x in lines[i + 1 : i + 4] if x.startswith("decision_type=")), None)
        kinds = [int(k) for k in types.removeprefix("decision_type=").split()] if types else []
        values = line.removeprefix("threshold=").split()
        out = []
        for j, raw in enumerate(values):
            categorical = bool(kinds[j] & 1) if j < len(kinds) else False
            out.append(raw if categorical else repr(_round_down_f32(float(raw))))
        lines[i] = "threshold=" + " ".join(out)
    return "\n".join(lines)


def _round_down_f32(t: float) -> float:
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def session(onnx_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelError(f"onnxruntime cannot load the model: {e}") from e


def onnx_probabilities(
    onnx_bytes_or_session: bytes | ort.InferenceSession, x: np.ndarray, batch: int = 8192
) -> np.ndarray:
    """Positive-class probabilities from the ONNX model, as float64."""
    return onnx_scores(onnx_bytes_or_session, x, "binary", batch)


def onnx_scores(
    onnx_bytes_or_session: bytes | ort.InferenceSession,
    x: np.ndarray,
    task: str = "binary",
    batch: int = 8192,
) -> np.ndarray:
    """One score per row, as float64: the positive-class probability, or the predicted value."""
    sess = (
        session(onnx_bytes_or_session)
        if isinstance(onnx_bytes_or_session, bytes)
        else onnx_bytes_or_session
    )
    output = SCORE_OUTPUTS[task]
    names = [o.name for o in sess.get_outputs()]
    if output not in names:
        raise ModelError(f"the {task} model has no output {output!r} (has {names})")
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    parts = [
        _column(sess.run([output], {INPUT_NAME: x32[i : i + batch]})[0], task)
        for i in range(0, len(x32), batch)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _column(out: np.ndarray, task: str) -> np.ndarray:
    # Binary: [n, 2] class probabilities, keep the positive class; regression: [n, 1].
    return out[:, 1] if task == "binary" else out.reshape(-1)


def native_probabilities(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """Positive-class probabilities from LightGBM itself (native API)."""
    return native_scores(booster, x)


def native_scores(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """LightGBM's own prediction per row: a probability (binary) or a value (regression)."""
    return np.asarray(booster.predict(np.asarray(x, dtype=np.float32)), dtype=np.float64)


def check_parity(
    native: np.ndarray, onnx: np.ndarray, tolerance: float, *, relative: bool = False
) -> float:
    """The max absolute difference; raises :class:`ParityError` above ``tolerance``.

    ``relative`` (regression): each difference is divided by ``max(1, |native|)``
    first, as ONNX sums trees in float32 and a large target loses absolute digits.

    >>> check_parity(np.array([5000.0]), np.array([5000.002]), 1e-5, relative=True) < 1e-6
    True

    >>> check_parity(np.array([0.1, 0.5]), np.array([0.1, 0.5000001]), 1e-5) < 1e-6
    True
    >>> check_parity(np.array([0.1, 0.5]), np.array([0.1, 0.6]), 1e-5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    loopline.trainer.errors.ParityError: ONNX and native probabilities differ by up to 0.1 ...
    """
    if native.shape != onnx.shape:
        raise ParityError(f"ONNX gave {onnx.shape} scores for {native.shape} rows", float("inf"))
    gap = np.abs(native - onnx)
    if relative:
        gap = gap / np.maximum(1.0, np.abs(native))
    diff = float(np.max(gap)) if len(native) else 0.0
    if not diff <= tolerance:  # NaN fails too
        what = "predictions differ relatively" if relative else "probabilities differ"
        raise ParityError(
            f"ONNX and native {what} by up to {diff:.3g} "
            f"(tolerance {tolerance:g}) on {len(native)} rows; not publishing",
            diff,
        )
    return diff
