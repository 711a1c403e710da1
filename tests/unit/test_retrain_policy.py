"""RetrainPolicy: drift events -> retrain events, with every gate."""

from __future__ import annotations

from dataclasses import replace

import pytest
from drift_events import T0, concept_drift

from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import DriftEvent, RetrainEvent, decode, encode
from loopline.contracts.settings import PolicySettings
from loopline.trainer.policy.rules import DAY_MS, RetrainPolicy

H = 3600 * 1000


class Rows:
    """The new-rows port: rows labeled at given times."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.calls: list[int] = []

    def add(self, n: int, at_ms: int) -> None:
        self.times += [at_ms] * n

    def __call__(self, since_ms: int) -> int:
        self.calls.append(since_ms)
        return sum(1 for t in self.times if t >= since_ms)


def drift(
    i: int, severity: str = "critical", kind: str = "concept", feature: str = "error"
) -> DriftEvent:
    return concept_drift(i, severity, kind=kind, feature=feature)


def policy(rows: Rows, **overrides: object) -> RetrainPolicy:
    values: dict = {"min_new_rows": 100, "min_interval_s": 3600, "schedule_s": 0, **overrides}
    settings = replace(PolicySettings(), **values)
    return RetrainPolicy(settings, "fraud", rows)


def test_a_critical_drift_triggers_once_enough_rows_arrived_since() -> None:
    rows = Rows()
    rows.add(1000, T0 - H)  # before the trigger: does not count
    p = policy(rows)
    decision = p.on_drift(drift(1), T0)
    assert (decision.action, decision.reason) == ("pending", "rows")
    rows.add(60, T0 + 1000)
    assert p.tick(T0 + 2000) == []  # still short: no new decision to report
    rows.add(60, T0 + 3000)
    [decision] = p.tick(T0 + 4000)
    event = decision.event
    assert decision.action == "triggered" and event is not None
    assert event.trigger == "drift" and event.drift_event_ids == ["de-1"]
    assert event.id.startswith("drift-fraud-") and event.time_ms == T0 + 4000
    assert "concept drift on error (critical" in event.reason
    assert rows.calls[-1] == T0  # rows counted since the trigger
    assert decode(RetrainEvent, encode(event)) == event
    assert p.pending is None and p.last_retrain_ms == T0 + 4000


def test_ids_are_deterministic_and_replays_are_duplicates() -> None:
    rows = Rows()
    rows.add(500, T0 + 10_000)
    first = policy(rows).on_drift(drift(7), T0).event
    second = policy(rows).on_drift(drift(7), T0 + 999).event
    assert first is not None and second is not None and first.id == second.id
    p = policy(rows)
    p.on_drift(drift(7), T0)
    assert p.on_drift(drift(7), T0 + 10).action == "duplicate"


def test_restored_history_makes_a_replayed_drift_a_duplicate() -> None:
    rows = Rows()
    rows.add(500, T0 + 1)
    emitted = policy(rows).on_drift(drift(3), T0).event
    assert emitted is not None
    restarted = policy(rows)
    assert restarted.restore([emitted]) == 1
    assert restarted.on_drift(drift(3), T0 + 5).action == "duplicate"
    assert restarted.last_retrain_ms == emitted.time_ms


def test_severity_kinds_and_the_warning_quorum() -> None:
    rows = Rows()
    rows.add(500, T0 + 1)
    p = policy(rows, trigger_kinds="concept,data", warning_quorum=2, quorum_window_s=600)
    assert p.on_drift(drift(1, severity="info"), T0).action == "below"
    assert p.on_drift(drift(2, kind="prediction", feature="score"), T0).action == "ignored"
    assert p.on_drift(drift(3, severity="warning", kind="data", feature="a"), T0).action == "below"
    # The same (kind, feature) again is no second opinion ...
    assert p.on_drift(drift(4, severity="warning", kind="data", feature="a"), T0).action == "below"
    # ... a warning on another feature, after the window, starts over ...
    late = T0 + 601_000
    assert p.on_drift(drift(5, severity="warning", kind="data", feature="b"), late).action == (
        "below"
    )
    # ... and one within the window completes the quorum.
    rows.add(500, late + 1000)
    decision = p.on_drift(drift(6, severity="warning", kind="concept"), late + 1000)
    assert decision.action == "triggered" and decision.event is not None
    assert decision.event.drift_event_ids == ["de-5", "de-6"]


def test_min_severity_warning_lets_one_warning_trigger() -> None:
    rows = Rows()
    rows.add(500, T0 + 1)
    p = policy(rows, min_severity="warning")
    assert p.on_drift(drift(1, severity="warning"), T0).action == "triggered"


def test_minimum_interval_holds_a_second_retrain_and_gathers_causes() -> None:
    rows = Rows()
    rows.add(500, T0 + 1)
    p = policy(rows)
    assert p.on_drift(drift(1), T0).action == "triggered"
    rows.add(500, T0 + 10 * 60_000)
    assert p.on_drift(drift(2), T0 + 10 * 60_000).reason == "interval"
    assert p.on_drift(drift(3, severity="warning"), T0 + 20 * 60_000).reason == "interval"
    assert p.tick(T0 + 30 * 60_000) == []
    [decision] = p.tick(T0 + H + 1)
    assert decision.event is not None and decision.event.drift_event_ids == ["de-2", "de-3"]


def test_the_daily_cap_counts_the_last_24_hours() -> None:
    rows = Rows()
    p = policy(rows, max_per_day=2, min_interval_s=0)
    for i, at in enumerate((T0, T0 + H, T0 + 2 * H)):
        rows.add(200, at + 1)
        decision = p.on_drift(drift(i), at)
        expected = "triggered" if i < 2 else "pending"
        assert decision.action == expected, i
    assert p.pending is not None and p.pending.held == "daily_cap"
    [decision] = p.tick(T0 + DAY_MS + 1)  # the first one left the 24 h window
    assert decision.action == "triggered"


def test_a_trigger_short_of_rows_expires() -> None:
    p = policy(Rows(), pending_timeout_s=60)
    assert p.on_drift(drift(1), T0).action == "pending"
    [decision] = p.tick(T0 + 61_000)
    assert (decision.action, decision.reason) == ("expired", "rows")
    assert p.pending is None and p.tick(T0 + 62_000) == []


def test_the_schedule_emits_one_event_per_slot_when_rows_arrived() -> None:
    rows = Rows()
    p = policy(rows, schedule_s=3600, min_interval_s=0)
    slot = (T0 // H + 1) * H
    assert p.tick(slot + 5) == []  # no rows yet: held, retried while the slot lasts
    rows.add(150, slot + 10)
    [decision] = p.tick(slot + 20)
    assert decision.event is not None
    assert decision.event.id == f"schedule-fraud-{slot}"  # as trainer.service names them
    assert decision.event.trigger == "schedule"
    assert p.tick(slot + 30) == []  # once per slot
    rows.add(150, slot + H + 1)
    [again] = p.tick(slot + H + 2)
    assert again.event is not None and again.event.id == f"schedule-fraud-{slot + H}"
    assert rows.calls[-1] == slot + 20  # rows since the last retrain


def test_a_schedule_slot_already_requested_elsewhere_is_not_repeated() -> None:
    rows = Rows()
    rows.add(500, T0)
    p = policy(rows, schedule_s=3600, min_interval_s=0)
    slot = (T0 // H + 1) * H
    p.restore([RetrainEvent(id=f"schedule-fraud-{slot}", time_ms=slot + 1, trigger="schedule",
                            reason="by the trainer")])  # fmt: skip
    assert p.tick(slot + 100) == []


@pytest.mark.parametrize(
    "overrides",
    [{"min_severity": "urgent"}, {"trigger_kinds": "concept,weather"}, {"max_per_day": 0}],
)
def test_bad_settings_are_config_errors(overrides: dict) -> None:
    with pytest.raises(ConfigError):
        RetrainPolicy(replace(PolicySettings(), **overrides), "fraud", Rows())


def test_a_new_triggering_signal_restarts_the_row_count() -> None:
    rows = Rows()
    p = policy(rows)
    assert p.on_drift(drift(1, kind="prediction", feature="score"), T0).action == "pending"
    rows.add(80, T0 + 1000)
    # The real drift, on another signal: its rows must be in the training data,
    # so the 80 rows after the first (false) alarm no longer count.
    assert p.on_drift(drift(2, kind="data", feature="amount"), T0 + 2000).action == "pending"
    rows.add(80, T0 + 3000)
    assert p.tick(T0 + 4000) == []
    assert rows.calls[-1] == T0 + 2000
    # Warnings and repeats of a pending signal join without restarting it.
    assert p.on_drift(drift(3, "warning", kind="concept"), T0 + 5000).action == "pending"
    assert p.on_drift(drift(4, kind="data", feature="amount"), T0 + 5000).action == "pending"
    rows.add(20, T0 + 6000)
    [decision] = p.tick(T0 + 7000)
    assert decision.action == "triggered" and rows.calls[-1] == T0 + 2000
    assert decision.event is not None and decision.event.drift_event_ids == [
        "de-1",
        "de-2",
        "de-3",
        "de-4",
    ]
