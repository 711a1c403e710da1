"""The Feast peer benchmark builds the model's row as Loopline serving does.

``benchmarks/peer_feast.py`` feeds one ONNX model from two stores; its scores
compare only if the hand-written Feast-side vector (``benchmarks/peer/feast_vector.py``,
driven by ``vector_spec``) equals serving's ``FeatureSet.assemble`` in the
model's input order, for every example repo.
"""

from __future__ import annotations

import doctest
import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from loopline.featurerepo.loader import load_project

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


feast_vector = _load("peer_feast_vector", ROOT / "benchmarks" / "peer" / "feast_vector.py")
# The benchmarks import their helpers as ``support.*`` (run from benchmarks/).
sys.path.insert(0, str(ROOT / "benchmarks"))
feast_peer = importlib.import_module("support.feast_peer")


@pytest.mark.parametrize("example", ["fraud", "delivery"])
def test_the_feast_side_row_equals_servings_in_the_models_order(example: str) -> None:
    fs = load_project(ROOT / "examples" / example).feature_set()
    rng = random.Random(3)
    order = list(fs.model_features)
    rng.shuffle(order)  # a model's inputs need not follow the feature set's order
    spec = feast_peer.vector_spec(fs, order)
    position = [fs.model_features.index(n) for n in order]
    request_fields = sorted({a for d in fs.derived for a in d.args if "." not in a})
    for trial in range(50):
        stored = {v.entity: [float(rng.randrange(-3, 30)) for _ in v.names] for v in fs.views}
        if trial % 5 == 0:  # an entity the store does not hold: its defaults
            stored[fs.views[0].entity] = None
        request = {f: rng.choice([0.0, rng.uniform(1, 500)]) for f in request_fields}
        now = 1000.0 + trial
        feast_answer = {
            f"{v.entity}__{n}": None if stored[v.entity] is None else stored[v.entity][i]
            for v in fs.views
            for i, n in enumerate(v.names)
        }
        want = fs.assemble(stored, request, now)
        got = feast_vector.vector(spec, feast_answer, request, now)
        assert got == [want[i] for i in position]


def test_feast_reads_only_the_stored_features_the_model_uses() -> None:
    fs = load_project(ROOT / "examples" / "fraud").feature_set()
    refs = feast_peer.feast_refs(feast_peer.vector_spec(fs, list(fs.model_features)))
    assert len(refs) == 17
    assert "card:last_event_time" in refs  # read by the age transform only
    assert "card:amount_sum_24h" not in refs  # stored, but no model input reads it
    assert all(r.split(":")[0] in ("card", "merchant") for r in refs)


def test_an_input_the_feature_set_lacks_is_refused() -> None:
    fs = load_project(ROOT / "examples" / "fraud").feature_set()
    with pytest.raises(ValueError, match=r"'card\.nope' is neither stored nor derived"):
        feast_peer.vector_spec(fs, ["card.nope"])


def test_an_unknown_step_is_refused_and_the_doc_example_holds() -> None:
    with pytest.raises(ValueError, match="unknown step kind 'sqrt'"):
        feast_vector.vector([["sqrt", [["request", "x"]], 0.0]], {}, {"x": 4.0}, 0.0)
    assert doctest.testmod(feast_vector).failed == 0
