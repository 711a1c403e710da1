"""The rollout policy and its per-arm statistics."""

from __future__ import annotations

import math
import random

import pytest
from sklearn.metrics import log_loss, roc_auc_score

from loopline.contracts.errors import InvalidRequestError
from loopline.rollout.policy import LatencyQuantile, LogLoss, RolloutPolicy, WindowAUC


def labeled(rng: random.Random, n: int, signal: float) -> list[tuple[float, int]]:
    """Scores that separate the classes by ``signal`` (0: random scores)."""
    out = []
    for _ in range(n):
        y = int(rng.random() < 0.3)
        s = min(max(0.5 + (signal if y else -signal) + rng.gauss(0, 0.2), 0.001), 0.999)
        out.append((s, y))
    return out


def test_window_auc_and_log_loss_match_sklearn() -> None:
    rng = random.Random(1)
    data = labeled(rng, 3000, 0.15)
    data += [(0.5, 1), (0.5, 0), (0.5, 0)]  # ties count half
    auc, loss = WindowAUC(window=10_000), LogLoss()
    for s, y in data:
        auc.update(s, y)
        loss.update(s, y)
    ys, ss = [y for _, y in data], [s for s, _ in data]
    assert auc.get() == pytest.approx(roc_auc_score(ys, ss), abs=1e-12)
    assert loss.get() == pytest.approx(log_loss(ys, ss), rel=1e-9)


def test_window_auc_keeps_only_the_recent_window() -> None:
    auc = WindowAUC(window=100)
    for i in range(100):
        auc.update(0.9 if i % 2 else 0.1, i % 2)  # perfect
    assert auc.get() == 1.0
    for i in range(100):
        auc.update(0.1 if i % 2 else 0.9, i % 2)  # inverted
    assert auc.get() == 0.0 and auc.n == 100
    assert math.isnan(WindowAUC().get())


def test_latency_quantile_over_window() -> None:
    q = LatencyQuantile(q=0.99, window=1000)
    for i in range(1, 1001):
        q.update(float(i))
    assert q.get() == 990.0
    assert math.isnan(LatencyQuantile().get())


def feed_calls(policy: RolloutPolicy, arm: str, n: int, error_rate: float, ms: float) -> None:
    rng = random.Random(arm)
    for _ in range(n):
        policy.update_call(arm, ms * (0.8 + 0.4 * rng.random()), error=rng.random() < error_rate)


def feed_labels(policy: RolloutPolicy, arm: str, data: list[tuple[float, int]]) -> None:
    for s, y in data:
        policy.update_label(arm, s, y)


def test_no_decision_with_too_little_data() -> None:
    policy = RolloutPolicy(min_labels=500, min_calls=200)
    assert policy.decide().action == "continue"
    # A terrible candidate, but below the minimum calls: no verdict yet.
    feed_calls(policy, "champion", 199, 0.0, 1.0)
    feed_calls(policy, "candidate", 199, 0.9, 9.0)
    decision = policy.decide()
    assert decision.action == "continue"
    rng = random.Random(2)
    feed_labels(policy, "champion", labeled(rng, 499, 0.2))
    feed_labels(policy, "candidate", labeled(rng, 499, 0.2))
    decision = policy.decide()
    assert decision.action == "continue" and "waiting for labels" in decision.reason


def test_promotes_after_enough_labels_when_not_worse() -> None:
    rng = random.Random(3)
    policy = RolloutPolicy(min_labels=1000, min_calls=100)
    feed_calls(policy, "champion", 500, 0.01, 1.0)
    feed_calls(policy, "candidate", 500, 0.01, 1.1)
    feed_labels(policy, "champion", labeled(rng, 1000, 0.15))
    feed_labels(policy, "candidate", labeled(rng, 999, 0.17))
    assert policy.decide().action == "continue"
    policy.update_label("candidate", 0.9, 1)
    decision = policy.decide()
    assert decision.action == "promote", decision
    assert decision.evidence["candidate"]["labels"] == 1000


def test_aborts_when_quality_is_worse_by_the_margin() -> None:
    rng = random.Random(4)
    policy = RolloutPolicy(min_labels=1000)
    feed_labels(policy, "champion", labeled(rng, 1000, 0.2))
    feed_labels(policy, "candidate", labeled(rng, 1000, 0.02))
    decision = policy.decide()
    assert decision.action == "abort" and "quality regression" in decision.reason


def test_aborts_at_once_on_error_rate_regression() -> None:
    policy = RolloutPolicy(min_labels=10_000, min_calls=200, error_margin=0.02)
    feed_calls(policy, "champion", 1000, 0.01, 1.0)
    feed_calls(policy, "candidate", 200, 0.01, 1.0)
    assert policy.decide().action == "continue"
    for _ in range(30):
        policy.update_call("candidate", error=True)  # injected failures
    decision = policy.decide()
    assert decision.action == "abort" and "error rate regression" in decision.reason
    assert decision.evidence["candidate"]["error_rate"] > 0.1


def test_aborts_at_once_on_latency_regression() -> None:
    policy = RolloutPolicy(min_labels=10_000, min_calls=200, latency_ratio=1.5)
    feed_calls(policy, "champion", 400, 0.0, 1.0)
    feed_calls(policy, "candidate", 400, 0.0, 1.3)
    assert policy.decide().action == "continue"
    feed_calls(policy, "candidate", 50, 0.0, 5.0)  # a slow tail
    decision = policy.decide()
    assert decision.action == "abort" and "latency regression" in decision.reason


def test_unknown_arm_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        RolloutPolicy().update_call("challenger", 1.0)


def test_constructor_parameters_are_attributes() -> None:
    policy = RolloutPolicy(min_labels=7, error_margin=0.05, latency_ratio=2.0)
    assert (policy.min_labels, policy.error_margin, policy.latency_ratio) == (7, 0.05, 2.0)
