"""Models like the trainer publishes, for serving tests only.

LightGBM trained on synthetic rows of the fraud feature set, exported with
onnxmltools exactly as the trainer exports (``input`` float [None, n];
``label`` and ``probabilities`` [n, 2], no ZipMap), published into a
:class:`DirectoryRegistry` with a full manifest including golden rows.
Serving must not import the trainer, hence this small twin. Regression
models (:func:`publish_regression`) export ``variable`` [n, 1] and carry
``task="regression"`` in their manifest. A registry opened with a signing
key signs what is published through it, as the trainer's does;
:func:`tamper` rewrites a version as someone without the key could.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from fraud_repo import FRAUD_FEATURES

from loopline.featurecore.features import FeatureSet
from loopline.registry.backend import RegistryBackend
from loopline.registry.directory import (
    MANIFEST_FILE,
    DirectoryRegistry,
    ManifestFields,
    ModelVersion,
    sha256_hex,
)
from loopline.registry.signatures import ModelKey


def synthetic_rows(n: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the rough ranges of fraud features and a learnable label."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 20.0, size=(n, n_features)).astype(np.float32)
    x[:, : n_features // 2] = rng.poisson(3.0, size=(n, n_features // 2))
    logit = 0.04 * x[:, -4] - 0.5 * x[:, 0] + 0.02 * x[:, 3] - 1.0 + rng.normal(0, 0.5, n)
    y = (logit > 0).astype(np.int32)
    return x, y


# Per task: the LightGBM estimator, the ONNX output serving reads, its manifest metrics.
_TASKS = {
    "binary": ("LGBMClassifier", "probabilities", {"auc": 0.9}),
    "regression": ("LGBMRegressor", "variable", {"rmse": 5.0, "mae": 4.0}),
}


def synthetic_targets(x: np.ndarray, seed: int) -> np.ndarray:
    """A real-valued target of the rows (an amount-like scale), learnable from them."""
    rng = np.random.default_rng(seed + 7)
    return 3.0 * x[:, -4] + 40.0 * x[:, 0] - 0.5 * x[:, 3] + 100.0 + rng.normal(0, 5.0, len(x))


@functools.cache
def train_onnx(
    n_trees: int = 20, n_leaves: int = 15, seed: int = 0, n_features: int = 20, task: str = "binary"
) -> bytes:
    """ONNX bytes of a LightGBM classifier, or regressor (cached per arguments)."""
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, y = synthetic_rows(4000, n_features, seed)
    estimator = getattr(lgb, _TASKS[task][0])
    model = estimator(
        n_estimators=n_trees, num_leaves=n_leaves, random_state=seed, verbose=-1, n_jobs=1
    )
    model.fit(x, y if task == "binary" else synthetic_targets(x, seed))
    onx = convert_lightgbm(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        target_opset=15,
        zipmap=False,
    )
    return onx.SerializeToString()


def onnx_scores(onnx_bytes: bytes, rows: np.ndarray, task: str = "binary") -> list[float]:
    """What the exported model gives for ``rows``: positive-class probabilities, or values."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = session.run([_TASKS[task][1]], {"input": rows.astype(np.float32)})[0]
    return [float(v) for v in (out[:, 1] if task == "binary" else out.reshape(-1))]


def manifest_fields(
    onnx_bytes: bytes,
    fs: FeatureSet = FRAUD_FEATURES,
    golden_rows: int = 8,
    seed: int = 0,
    task: str = "binary",
) -> ManifestFields:
    rows, _ = synthetic_rows(golden_rows, len(fs.model_features), seed + 1000)
    _estimator, output, metrics = _TASKS[task]
    return ManifestFields(
        feature_set=fs.name,
        fingerprint=fs.fingerprint,
        feature_names=list(fs.model_features),
        probability_output=output,
        task=task,
        golden_inputs=[[float(v) for v in r] for r in rows],
        golden_scores=onnx_scores(onnx_bytes, rows, task),
        metrics=dict(metrics),
        code_version="tests",
    )


def publish(
    registry: RegistryBackend | str | Path,
    *,
    model: str = "fraud",
    n_trees: int = 20,
    n_leaves: int = 15,
    seed: int = 0,
    alias: str | None = "champion",
    fs: FeatureSet = FRAUD_FEATURES,
    task: str = "binary",
    signing_key: ModelKey | None = None,
    **overrides: object,
) -> ModelVersion:
    """Train (cached), export and publish one version; point ``alias`` at it.

    ``overrides`` replace manifest fields, e.g. ``fingerprint="0" * 64`` for a
    model built for another feature set, or ``golden_scores=[...]``. A
    registry given as a path is opened with ``signing_key`` (None: unsigned);
    a registry object (any backend) signs with its own key.
    """
    reg = (
        DirectoryRegistry(registry, signing_key=signing_key)
        if isinstance(registry, str | Path)
        else registry
    )
    onnx_bytes = train_onnx(n_trees, n_leaves, seed, len(fs.model_features), task)
    fields = manifest_fields(onnx_bytes, fs, seed=seed, task=task)
    version = reg.publish(model, onnx_bytes, replace(fields, **overrides))  # type: ignore[arg-type]
    if alias:
        reg.set_alias(model, alias, version.manifest.version)
    return version


def tamper(mv: ModelVersion, onnx_bytes: bytes | None = None) -> None:
    """Replace ``mv``'s model and record the new file's sha256 in its manifest, leaving
    the signature as it was: what someone with write access but no key can do.

    By default the new file is the same graph with another doc string: it
    still reproduces the golden scores, so only the signature can refuse it.
    """
    if onnx_bytes is None:
        import onnx

        proto = onnx.load_from_string(mv.model_path.read_bytes())
        proto.doc_string = "tampered"
        onnx_bytes = proto.SerializeToString()
    mv.model_path.write_bytes(onnx_bytes)
    manifest = dataclasses.replace(mv.manifest, sha256=sha256_hex(onnx_bytes))
    (mv.model_path.parent / MANIFEST_FILE).write_text(manifest.to_json())


def publish_regression(registry: DirectoryRegistry | str | Path, **kw: Any) -> ModelVersion:
    """:func:`publish` for a regression model (output ``variable`` [n, 1])."""
    return publish(registry, task="regression", **kw)


def faulty_onnx(fail_above: float, column: int, n_features: int = 20) -> bytes:
    """A small logistic model that scores NaN whenever ``column`` exceeds ``fail_above``.

    An injected fault for rollout tests: it loads, passes its golden rows (all
    below the threshold) and then fails on part of live traffic, as a model
    with a numerical bug would.
    """
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    weights = rng.normal(0, 0.05, size=(n_features, 1)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
        helper.make_node("Slice", ["input", "col_lo", "col_hi", "axis1"], ["x"]),
        helper.make_node("Sub", ["limit", "x"], ["room"]),
        helper.make_node("Sqrt", ["room"], ["gate"]),  # NaN above the limit
        helper.make_node("Mul", ["gate", "zero"], ["nan_or_zero"]),
        helper.make_node("Add", ["p", "nan_or_zero"], ["pos"]),
        helper.make_node("Sub", ["one", "pos"], ["neg"]),
        helper.make_node("Concat", ["neg", "pos"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    consts = [
        helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.flatten().tolist()),
        helper.make_tensor("col_lo", TensorProto.INT64, [1], [column]),
        helper.make_tensor("col_hi", TensorProto.INT64, [1], [column + 1]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("limit", TensorProto.FLOAT, [1], [fail_above]),
        helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "faulty",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish_faulty(
    registry: DirectoryRegistry, *, fail_above: float, model: str = "fraud"
) -> ModelVersion:
    """Publish :func:`faulty_onnx` on the fraud feature set's ``amount`` column (no alias)."""
    fs = FRAUD_FEATURES
    column = list(fs.model_features).index("amount")
    onnx_bytes = faulty_onnx(fail_above, column, len(fs.model_features))
    fields = manifest_fields(onnx_bytes, fs)
    if max(row[column] for row in fields.golden_inputs) >= fail_above:
        raise ValueError(f"golden rows reach amount {fail_above}; pick a higher threshold")
    return registry.publish(model, onnx_bytes, fields)
