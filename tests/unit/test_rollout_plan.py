"""Rollout plans: JSON round trips, the sticky canary split, shadow sampling, overrides."""

from __future__ import annotations

import math

import pytest

from loopline.contracts.errors import ConfigError, InvalidRequestError, SchemaError
from loopline.rollout.plan import (
    RolloutPlan,
    assign_arm,
    plan_arm,
    shadow_request_id,
    shadow_sampled,
)


def canary(share: float, plan_id: str = "plan-a") -> RolloutPlan:
    return RolloutPlan.start(
        "fraud", candidate="3", champion="2", mode="canary", canary_share=share, plan_id=plan_id
    )


def test_plan_json_round_trip_keeps_every_field() -> None:
    plan = canary(0.2).finished("aborted", "error rate regression", now_ms=123)
    again = RolloutPlan.from_json(plan.to_json())
    assert again == plan
    assert (again.state, again.reason, again.updated_ms) == (
        "aborted",
        "error rate regression",
        123,
    )
    # Newer writers may add fields: readers ignore what they do not know.
    assert RolloutPlan.from_dict({**plan.to_dict(), "future": 1}) == plan


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        '{"model": "fraud"}',
        '{"model": "m", "candidate_version": "2", '
        '"champion_version": "1", "plan_id": "p", "mode": "blue-green"}',
        "[1, 2]",
    ],
)
def test_malformed_plan_records_raise_schema_errors(bad: str) -> None:
    with pytest.raises(SchemaError):
        RolloutPlan.from_json(bad)


def test_invalid_plans_are_refused() -> None:
    with pytest.raises(ConfigError):
        canary(1.5)
    with pytest.raises(ConfigError):
        RolloutPlan.start("fraud", candidate="3", champion="2", mode="linear")
    with pytest.raises(ConfigError):
        canary(0.1).finished("running", "")


def test_start_gives_fresh_plan_ids() -> None:
    a = RolloutPlan.start("fraud", candidate="3", champion="2", mode="shadow")
    b = RolloutPlan.start("fraud", candidate="3", champion="2", mode="shadow")
    assert a.plan_id != b.plan_id and a.running and a.created_ms > 0


def test_canary_share_within_four_sigma_over_100k_entities() -> None:
    n, share = 100_000, 0.1
    plan = canary(share)
    hits = sum(assign_arm(plan, f"card-{i}") == "candidate" for i in range(n))
    sigma = math.sqrt(n * share * (1 - share))
    assert abs(hits - n * share) < 4 * sigma, hits


def test_assignment_is_sticky_per_entity_and_reshuffled_by_a_new_plan() -> None:
    first, second = canary(0.5, "plan-a"), canary(0.5, "plan-b")
    entities = [f"card-{i}" for i in range(2000)]
    arms_a = [assign_arm(first, e) for e in entities]
    assert arms_a == [assign_arm(first, e) for e in entities]
    # An equal plan read back from the registry gives the same split.
    assert arms_a == [assign_arm(RolloutPlan.from_json(first.to_json()), e) for e in entities]
    arms_b = [assign_arm(second, e) for e in entities]
    changed = sum(a != b for a, b in zip(arms_a, arms_b, strict=True))
    # Independent halves: about half the entities change arm (1000 +- 4 * 22).
    assert 900 < changed < 1100, changed


def test_a_larger_share_keeps_the_entities_already_on_the_candidate() -> None:
    small, large = canary(0.1), canary(0.3)
    for i in range(5000):
        if assign_arm(small, f"c{i}") == "candidate":
            assert assign_arm(large, f"c{i}") == "candidate"


def test_overrides_and_modes() -> None:
    plan = canary(0.0)
    assert assign_arm(plan, "x") == "champion"
    assert assign_arm(plan, "x", override="candidate") == "candidate"
    assert assign_arm(canary(1.0), "x", override="champion") == "champion"
    with pytest.raises(InvalidRequestError):
        assign_arm(plan, "x", override="challenger")
    shadow = RolloutPlan.start("fraud", candidate="3", champion="2", mode="shadow")
    # Shadow: the champion always answers; the candidate only scores alongside.
    assert {assign_arm(shadow, f"c{i}") for i in range(500)} == {"champion"}
    # A finished plan routes everything to the champion, overrides included.
    for done in (canary(1.0).finished("aborted", "x"), canary(1.0).finished("promoted", "y")):
        assert assign_arm(done, "x") == "champion"
        assert assign_arm(done, "x", override="candidate") == "champion"
    assert assign_arm(None, "x", override="candidate") == "champion"


def test_shadow_sampling_share_and_stability() -> None:
    n = 20_000
    plan = RolloutPlan.start(
        "fraud", candidate="3", champion="2", mode="shadow", shadow_share=0.25, plan_id="s"
    )
    sampled = [shadow_sampled(plan, f"req-{i}") for i in range(n)]
    sigma = math.sqrt(n * 0.25 * 0.75)
    assert abs(sum(sampled) - n * 0.25) < 4 * sigma
    assert sampled == [shadow_sampled(plan, f"req-{i}") for i in range(n)]
    full = RolloutPlan.start("fraud", candidate="3", champion="2", mode="shadow")
    assert all(shadow_sampled(full, f"req-{i}") for i in range(1000))
    assert not shadow_sampled(canary(1.0), "req-1")
    assert not shadow_sampled(None, "req-1")


def test_shadow_logs_get_their_own_request_id() -> None:
    ids = {shadow_request_id(f"req-{i}") for i in range(1000)}
    assert len(ids) == 1000 and not ids & {f"req-{i}" for i in range(1000)}


def test_labeled_examples_count_only_for_this_plans_versions_and_time() -> None:
    plan = RolloutPlan.start(
        "fraud", candidate="3", champion="2", mode="canary", canary_share=0.5, created_ms=10_000
    )
    assert plan_arm(plan, "3", 10_000) == "candidate"
    assert plan_arm(plan, "2", 10_001) == "champion"
    assert plan_arm(plan, "2", 9_999) is None  # scored before the plan started
    assert plan_arm(plan, "1", 20_000) is None  # another version
