"""Serving under a rollout plan: shadow, canary, fallback, auto-abort, promotion (no sockets)."""

from __future__ import annotations

import math
import time

import model_factory
import pytest
from polling import wait_until
from serving_support import CoreKit, card_values, make_core, merchant_values

from loopline.contracts.errors import InvalidRequestError
from loopline.contracts.settings import RolloutSettings
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan, shadow_request_id
from loopline.serving.requests import PredictInput

SETTINGS = RolloutSettings(min_calls=50, decide_every_s=0.0)
# Golden rows stay below this amount; the faulty candidate scores NaN above it.
FAIL_ABOVE = 10_000.0


def request(card: str = "c1", amount: float = 25.0, **kw) -> PredictInput:
    return PredictInput(
        entities={"card_id": card, "merchant_id": "m1"}, fields={"amount": amount}, **kw
    )


def start(registry: DirectoryRegistry, candidate: str, **plan) -> RolloutPlan:
    p = RolloutPlan.start("fraud", candidate=candidate, champion="1", **plan)
    registry.start_rollout(p)
    return p


@pytest.fixture
def kit(tmp_path) -> CoreKit:
    kit = make_core(tmp_path, rollout=SETTINGS)
    now = time.time()
    kit.store.put("card", "c1", card_values(), now - 5)
    kit.store.put("merchant", "m1", merchant_values(), now - 5)
    # v2: another LightGBM model (different trees, so different scores).
    model_factory.publish(kit.registry, n_trees=30, seed=5, alias=None)
    return kit


def test_shadow_answers_equal_champion_only_answers_and_logs_both(kit: CoreKit) -> None:
    requests = [request(card=f"c{i}", amount=10.0 + i, event_id=f"e{i}") for i in range(40)]
    alone = [kit.core.predict(r).score for r in requests]
    start(kit.registry, "2", mode="shadow", shadow_share=1.0)
    kit.rollout.sync()
    assert kit.rollout.arms.candidate.version == "2"
    kit.sink.logged.clear()
    shadowed = [kit.core.predict(r) for r in requests]

    assert [p.score for p in shadowed] == alone
    assert {p.arm for p in shadowed} == {"champion"}
    assert {p.model.version for p in shadowed} == {"1"}
    wait_until(lambda: len(kit.sink.logged) == 80, timeout_s=10, what="shadow logs")
    by_arm = {"champion": [], "candidate": []}
    for prediction, _, event_id, _ in kit.sink.logged:
        by_arm[prediction.arm].append((prediction, event_id))
    assert len(by_arm["champion"]) == len(by_arm["candidate"]) == 40
    answered = {p.request_id: (p, e) for p, e in by_arm["champion"]}
    for shadow, event_id in by_arm["candidate"]:
        original, original_event = answered[shadow.request_id.removesuffix("/shadow")]
        assert shadow.request_id == shadow_request_id(original.request_id)
        assert event_id == original_event  # the label join pairs both with one outcome
        assert shadow.model.version == "2"
        assert shadow.features == original.features  # same order for both models here
        assert shadow.score != original.score


def test_shadow_share_samples_requests(kit: CoreKit) -> None:
    start(kit.registry, "2", mode="shadow", shadow_share=0.25)
    kit.rollout.sync()
    for i in range(800):
        kit.core.predict(request(card=f"c{i}"))
    wait_until(lambda: kit.core.shadow.pending == 0, timeout_s=10, what="shadow queue drained")
    time.sleep(0.05)
    shadows = sum(1 for p, *_ in kit.sink.logged if p.arm == "candidate")
    # Binomial(800, 0.25): sd 12.2; 5 sd either side.
    assert abs(shadows - 200) < 62, shadows


def test_canary_split_matches_the_share_and_is_sticky(kit: CoreKit) -> None:
    start(kit.registry, "2", mode="canary", canary_share=0.2)
    kit.rollout.sync()
    n = 2000
    arms = {f"card-{i}": kit.core.predict(request(card=f"card-{i}")).arm for i in range(n)}
    share = sum(a == "candidate" for a in arms.values()) / n
    sd = math.sqrt(0.2 * 0.8 / n)
    assert abs(share - 0.2) < 5 * sd, share
    # Sticky: the same card keeps its arm for the plan, whatever else it sends.
    for card in list(arms)[:200]:
        again = kit.core.predict(request(card=card, amount=99.0))
        assert again.arm == arms[card]
        assert again.model.version == ("2" if arms[card] == "candidate" else "1")
    # Overrides win while the plan runs.
    champion_card = next(c for c, a in arms.items() if a == "champion")
    assert kit.core.predict(request(card=champion_card, arm="candidate")).arm == "candidate"
    candidate_card = next(c for c, a in arms.items() if a == "candidate")
    assert kit.core.predict(request(card=candidate_card, arm="champion")).arm == "champion"


def test_a_new_plan_reshuffles_the_split(kit: CoreKit) -> None:
    first = start(kit.registry, "2", mode="canary", canary_share=0.5)
    kit.rollout.sync()
    before = [kit.core.predict(request(card=f"k{i}")).arm for i in range(300)]
    kit.registry.finish_rollout("fraud", first.plan_id, "aborted", "test")
    start(kit.registry, "2", mode="canary", canary_share=0.5)
    kit.rollout.sync()
    after = [kit.core.predict(request(card=f"k{i}")).arm for i in range(300)]
    assert before != after


def test_batch_answers_by_arm(kit: CoreKit) -> None:
    start(kit.registry, "2", mode="canary", canary_share=0.5)
    kit.rollout.sync()
    single = {f"b{i}": kit.core.predict(request(card=f"b{i}")) for i in range(64)}
    batch = kit.core.predict_many([request(card=c) for c in single])
    assert [p.arm for p in batch] == [p.arm for p in single.values()]
    assert [p.score for p in batch] == pytest.approx([p.score for p in single.values()], abs=1e-6)


def test_arm_overrides_are_checked(kit: CoreKit) -> None:
    with pytest.raises(InvalidRequestError, match="arm 'shadow' is not one of"):
        kit.core.predict(request(arm="shadow"))
    with pytest.raises(InvalidRequestError, match="no rollout of 'fraud' is running"):
        kit.core.predict(request(arm="candidate"))


def test_failing_canary_falls_back_to_the_champion_then_aborts(kit: CoreKit) -> None:
    faulty = model_factory.publish_faulty(kit.registry, fail_above=FAIL_ABOVE)
    plan = start(kit.registry, faulty.manifest.version, mode="canary", canary_share=1.0)
    kit.rollout.sync()
    ok = kit.core.predict(request(amount=20.0))
    assert ok.arm == "candidate" and ok.model.version == faulty.manifest.version
    for i in range(60):
        p = kit.core.predict(request(card=f"f{i}", amount=FAIL_ABOVE * 2))
        assert p.arm == "champion" and p.model.version == "1" and math.isfinite(p.score)
    for i in range(60):
        kit.core.predict(request(card=f"g{i}", amount=20.0, arm="champion"))
    decision = kit.rollout.decide()
    assert decision is not None and decision.action == "abort"
    assert "error rate regression" in decision.reason
    ended = kit.registry.rollout("fraud")
    assert ended.plan_id == plan.plan_id and ended.state == "aborted"
    assert "candidate" not in kit.registry.aliases("fraud")
    assert kit.rollout.arms.plan is None
    assert kit.core.predict(request(amount=20.0)).arm == "champion"
    calls = kit.metrics.registry.get_sample_value
    labels = {"arm": "candidate", "path": "answer", "result": "error"}
    assert calls("loopline_serving_arm_calls_total", labels) == 60
    assert calls("loopline_serving_rollout_decisions_total", {"action": "abort"}) == 1


def test_healthy_candidate_is_not_aborted(kit: CoreKit) -> None:
    start(kit.registry, "2", mode="canary", canary_share=0.5)
    kit.rollout.sync()
    for i in range(400):
        kit.core.predict(request(card=f"h{i}"))
    decision = kit.rollout.decide()
    assert decision is not None and decision.action == "continue"
    assert kit.registry.rollout("fraud").running


def test_candidate_that_cannot_load_aborts_the_plan(kit: CoreKit) -> None:
    bad = model_factory.publish(kit.registry, seed=9, alias=None, golden_scores=[0.5] * 8)
    start(kit.registry, bad.manifest.version, mode="shadow")
    kit.rollout.sync()
    assert kit.rollout.arms.plan is None
    ended = kit.registry.rollout("fraud")
    assert ended.state == "aborted" and "cannot serve" in ended.reason


def test_promotion_adopts_the_loaded_candidate(kit: CoreKit) -> None:
    plan = start(kit.registry, "2", mode="canary", canary_share=0.3)
    kit.rollout.sync()
    candidate = kit.rollout.arms.candidate
    sample = kit.metrics.registry.get_sample_value
    loads = sample("loopline_serving_model_load_seconds_count")
    kit.registry.finish_rollout("fraud", plan.plan_id, "promoted", "better")
    kit.manager.sync()
    kit.rollout.sync()
    assert kit.core.slot.current is candidate  # no second load
    assert (
        kit.metrics.registry.get_sample_value("loopline_serving_model_load_seconds_count") == loads
    )
    assert kit.rollout.arms.plan is None
    p = kit.core.predict(request())
    assert p.model.version == "2" and p.arm == "champion"


def test_a_restarted_server_resumes_the_running_plan(kit: CoreKit, tmp_path) -> None:
    plan = start(kit.registry, "2", mode="canary", canary_share=0.4)
    kit.rollout.sync()
    arms = [kit.core.predict(request(card=f"r{i}")).arm for i in range(200)]
    restarted = make_core(tmp_path, publish=False, rollout=SETTINGS)
    restarted.store.data.update(kit.store.data)
    assert restarted.rollout.arms.plan == plan
    assert [restarted.core.predict(request(card=f"r{i}")).arm for i in range(200)] == arms


def test_latency_policy_compares_cpu_time_not_waiting(kit: CoreKit) -> None:
    # The shadow thread's wall time includes waiting for the GIL behind request
    # threads; only the model's own (CPU) time may decide a latency abort.
    start(kit.registry, "2", mode="shadow")
    kit.rollout.sync()
    for _ in range(300):
        kit.rollout.record("champion", "answer", 0.0002, 0.0002, 0.4)
        kit.rollout.record("candidate", "shadow", 0.0050, 0.0002, 0.4)
    assert kit.rollout.decide().action == "continue"
    for _ in range(300):
        kit.rollout.record("candidate", "shadow", 0.0050, 0.0050, 0.4)
    decision = kit.rollout.decide()
    assert decision.action == "abort" and "latency regression" in decision.reason


def test_a_request_pinned_to_the_candidate_version_is_labelled_candidate(kit: CoreKit) -> None:
    start(kit.registry, "2", mode="shadow")
    kit.rollout.sync()
    kit.sink.logged.clear()
    pinned = kit.core.predict(request(model_version="2"))
    batch = kit.core.predict_many([request(model_version="2"), request(model_version="1")])
    assert (pinned.arm, pinned.model.version) == ("candidate", "2")
    assert [(p.arm, p.model.version) for p in batch] == [("candidate", "2"), ("champion", "1")]
    # Only the champion's answer is shadowed (the candidate already answered the others).
    wait_until(lambda: kit.core.shadow.pending == 0, timeout_s=10, what="shadow queue drained")
    time.sleep(0.05)
    shadows = [p for p, *_ in kit.sink.logged if p.request_id.endswith("/shadow")]
    assert len(shadows) == 1
