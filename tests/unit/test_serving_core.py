"""The inference core: lookup, assembly, statuses, degradation, validation (no sockets)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from fraud_repo import FRAUD_FEATURES as FS
from serving_support import CoreKit, card_values, make_core, merchant_values

from loopline.contracts.errors import InvalidRequestError, ModelNotFoundError, UnavailableError
from loopline.serving.features import FeatureStatus
from loopline.serving.requests import PredictInput

NAMES = list(FS.model_features)
CARD = [i for i, n in enumerate(NAMES) if n.startswith("card.")] + [17, 19]
MERCHANT = [i for i, n in enumerate(NAMES) if n.startswith("merchant.")] + [18]


@pytest.fixture
def kit(tmp_path) -> CoreKit:
    return make_core(tmp_path)


def request(card: str = "c1", merchant: str = "m1", amount: float = 25.0, **kw) -> PredictInput:
    return PredictInput(
        entities={"card_id": card, "merchant_id": merchant}, fields={"amount": amount}, **kw
    )


def onnx_score(kit: CoreKit, vector: list[float]) -> float:
    model = kit.core.slot.current
    return float(model.probabilities(np.asarray([vector], dtype=np.float32))[0])


def test_fresh_features_give_the_assembled_vector_and_the_model_score(kit: CoreKit) -> None:
    now = time.time()
    card, merchant = card_values(), merchant_values()
    kit.store.put("card", "c1", card, now - 5)
    kit.store.put("merchant", "m1", merchant, now - 5)
    now_ms = int(now * 1000)
    p = kit.core.predict(request(event_time_ms=now_ms))
    expected = FS.assemble({"card": card, "merchant": merchant}, {"amount": 25.0}, now_ms / 1000)
    assert p.features == pytest.approx(expected)
    assert p.score == pytest.approx(onnx_score(kit, expected), abs=1e-6)
    assert set(p.statuses) == {FeatureStatus.OK} and len(p.statuses) == len(NAMES)
    assert not p.degraded
    assert p.model.version == "1" and p.request_id
    # One round trip for both entities, bounded by the configured timeout.
    assert len(kit.store.calls) == 1 and len(kit.store.calls[0][0]) == 2
    assert kit.store.calls[0][1] <= 0.005


def test_unknown_entity_is_missing_with_defaults(kit: CoreKit) -> None:
    kit.store.put("card", "c1", card_values(), time.time())
    p = kit.core.predict(request(merchant="never-seen"))
    assert p.degraded
    for i in MERCHANT:
        assert p.statuses[i] is FeatureStatus.MISSING, NAMES[i]
    for i in CARD:
        assert p.statuses[i] is FeatureStatus.OK, NAMES[i]
    assert p.statuses[NAMES.index("amount")] is FeatureStatus.OK
    # Merchant defaults: counts 0, ratio default 1.0.
    assert p.features[NAMES.index("merchant.txn_count_1h")] == 0.0
    assert p.features[NAMES.index("amount_to_merchant_mean_24h")] == 1.0


def test_old_values_are_stale_relative_to_the_event_time(kit: CoreKit) -> None:
    t = 1_700_000_000.0
    kit.store.put("card", "c1", card_values(), t - 7200)  # 2 h before the event
    kit.store.put("merchant", "m1", merchant_values(), t - 60)
    p = kit.core.predict(request(event_time_ms=int(t * 1000)))
    assert {p.statuses[i] for i in CARD} == {FeatureStatus.STALE}
    assert {p.statuses[i] for i in MERCHANT} == {FeatureStatus.OK}
    # Values are still the stored ones: stale is information, not a fallback.
    assert p.features[0] == card_values()[0]
    # Scoring an old event against newer values is not stale.
    p = kit.core.predict(request(event_time_ms=int((t - 7300) * 1000)))
    assert not p.degraded


def test_store_down_uses_last_known_values_else_defaults(kit: CoreKit) -> None:
    now = time.time()
    kit.store.put("card", "c1", card_values(), now)
    kit.store.put("merchant", "m1", merchant_values(), now)
    fresh = kit.core.predict(request())
    kit.store.fail = "down"
    p = kit.core.predict(request())
    stored = [i for i in range(len(NAMES)) if i not in (16,)]
    assert {p.statuses[i] for i in stored} == {FeatureStatus.DEFAULTED}
    assert p.statuses[16] is FeatureStatus.OK  # amount comes from the request
    assert p.features[:16] == fresh.features[:16]  # last known
    # A card never read before gets defaults.
    p = kit.core.predict(request(card="c-new"))
    assert p.features[NAMES.index("card.txn_count_1h")] == 0.0
    assert p.statuses[0] is FeatureStatus.DEFAULTED
    errors = kit.metrics.registry.get_sample_value(
        "loopline_serving_store_errors_total", {"reason": "down"}
    )
    degraded = kit.metrics.registry.get_sample_value(
        "loopline_serving_degraded_answers_total", {"status": "defaulted"}
    )
    assert errors == 2 and degraded == 2


def test_store_down_for_a_batch_defaults_every_request(kit: CoreKit) -> None:
    kit.store.put("card", "c1", card_values(), time.time())
    kit.core.predict(request())  # c1 is now known
    kit.store.fail = "timeout"
    results = kit.core.predict_many([request(), request(card="c2"), request(card="c1")])
    assert [r.statuses[0] for r in results] == [FeatureStatus.DEFAULTED] * 3
    assert results[0].features[0] == results[2].features[0] == card_values()[0]
    assert results[1].features[0] == 0.0


def test_no_time_left_skips_the_store(kit: CoreKit) -> None:
    p = kit.core.predict(request(), budget_s=0.0001)
    assert kit.store.calls == []
    assert p.statuses[0] is FeatureStatus.DEFAULTED
    # The deadline also bounds the store's timeout.
    kit.core.predict(request(), budget_s=0.002)
    assert kit.store.calls[-1][1] == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("inp", "message"),
    [
        (
            PredictInput({"card_id": "c", "merchant_id": "m", "cardd": "x"}, {"amount": 1.0}),
            "unknown entity field 'cardd'",
        ),
        (PredictInput({"card_id": "c"}, {"amount": 1.0}), "entity field 'merchant_id' is missing"),
        (
            PredictInput({"card_id": "", "merchant_id": "m"}, {"amount": 1.0}),
            "entity field 'card_id' is missing or empty",
        ),
        (
            PredictInput({"card_id": "c" * 300, "merchant_id": "m"}, {"amount": 1.0}),
            "300 characters long (limit 256)",
        ),
        (
            PredictInput({"card_id": "c", "merchant_id": "m"}, {"amount": 1.0, "tip": 2.0}),
            "unknown field 'tip'",
        ),
        (PredictInput({"card_id": "c", "merchant_id": "m"}, {}), "field 'amount' is missing"),
        (
            PredictInput({"card_id": "c", "merchant_id": "m"}, {"amount": math.nan}),
            "field 'amount' is nan",
        ),
        (
            PredictInput({"card_id": "c", "merchant_id": "m"}, {"amount": math.inf}),
            "field 'amount' is inf",
        ),
        (
            PredictInput({"card_id": "c", "merchant_id": "m"}, {"amount": 1.0}, event_time_ms=-5),
            "event_time_ms is -5",
        ),
    ],
)
def test_bad_requests_are_refused_precisely(kit: CoreKit, inp: PredictInput, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kit.core.predict(inp)
    assert kit.store.calls == []


def test_no_model_is_unavailable(tmp_path) -> None:
    kit = make_core(tmp_path, publish=False)
    with pytest.raises(UnavailableError, match="no model loaded yet for 'fraud'"):
        kit.core.predict(request())


def test_model_name_and_version_selection(kit: CoreKit) -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model 'other'"):
        kit.core.predict(request(model="other"))
    with pytest.raises(ModelNotFoundError, match="version '9' is not loaded"):
        kit.core.model("fraud", "9")
    import model_factory

    model_factory.publish(kit.registry, seed=1)
    kit.manager.sync()
    assert kit.core.model().version == "2"
    assert kit.core.model("fraud", "1").version == "1"  # previous stays loaded
    assert kit.core.predict(request(model_version="1")).model.version == "1"


def test_batch_scores_each_request_alone_with_one_round_trip(kit: CoreKit) -> None:
    kit.store.put("card", "c1", card_values(), time.time())
    inputs = [request(), request(amount=math.nan), request(card="c2", amount=500.0)]
    results = kit.core.predict_many(inputs)
    assert isinstance(results[1], InvalidRequestError)
    one = kit.core.predict(request())
    assert results[0].score == pytest.approx(one.score, abs=1e-6)
    assert results[2].statuses[0] is FeatureStatus.MISSING
    assert len(kit.store.calls) == 2 and len(kit.store.calls[0][0]) == 4


def test_every_prediction_is_logged_with_the_exact_vector(kit: CoreKit) -> None:
    kit.store.put("card", "c1", card_values(), time.time())
    p = kit.core.predict(request(event_time_ms=1_700_000_000_123, event_id="e9", request_id="r1"))
    logged, event_time, event_id, names = kit.sink.logged[-1]
    assert logged is p and logged.request_id == "r1"
    assert event_time == 1_700_000_000_123 and event_id == "e9"
    assert names == NAMES
    assert logged.features == p.features


def test_raw_matrix_scoring_checks_shape_and_values(kit: CoreKit) -> None:
    model = kit.core.model()
    rows = np.asarray(model.manifest.golden_inputs, dtype=np.float32)
    probs = kit.core.score_matrix(model, rows, "req")
    assert probs.shape == (len(rows), 2)
    assert probs[:, 1] == pytest.approx(model.manifest.golden_scores, abs=1e-5)
    assert probs.sum(axis=1) == pytest.approx(np.ones(len(rows)))
    assert [x[0].request_id for x in kit.sink.logged[-len(rows) :]][:2] == ["req-0", "req-1"]
    with pytest.raises(InvalidRequestError, match=r"got shape \[2, 19\]"):
        kit.core.score_matrix(model, rows[:2, :19])
    bad = rows[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(InvalidRequestError, match=r"row 1 column 3 \(card.txn_count_1h\) is nan"):
        kit.core.score_matrix(model, bad)
