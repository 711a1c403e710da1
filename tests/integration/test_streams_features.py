"""The features flow on the real stack, run as a real process: what goes in, what comes out.

Online values in Redis must equal the offline replay (``final_values``) over
the same accepted events, byte for byte: bad and late input goes to dead
letters, ``start_from=end`` skips history, an applied earlier feature-set
version runs beside the definitions' own. Restarts and parallelism are in
test_streams_features_recovery.py.
"""

from __future__ import annotations

import json
from typing import Any

from features_support import (
    BASE_MS,
    FeaturesRun,
    dead_letters,
    events,
    expected_store,
    features_flow,
    flow_metrics,
    produce_events,
    stored,
)
from fraud_repo import FRAUD_FEATURES, changed_fraud_features

from loopline.contracts.schemas import DeadLetter
from loopline.featurerepo.state import AppliedState
from loopline.stack.ports import free_port


def test_bad_and_late_events_go_to_dead_letters_and_nothing_else_is_lost(
    features_run: FeaturesRun,
) -> None:
    run = features_run
    good = events(6000, seed=1)
    bad = [
        (b"c1", b"{this is not json"),
        (b"c2", b'["a", "list"]'),
        (b"c3", json.dumps({**good[0], "event_id": "bad-amount", "amount": "12"}).encode()),
        (b"c4", json.dumps({**good[1], "event_id": "neg", "amount": -5}).encode()),
        (b"c5", json.dumps({k: v for k, v in good[2].items() if k != "card_id"}).encode()),
    ]
    # Late: 10 min before anything else, sent after each card's partition moved on.
    late = [
        {**e, "event_id": f"late-{i}", "event_time": BASE_MS - 600_000}
        for i, e in enumerate(good[-40:])
    ]
    mixed: list[Any] = good[:3000] + bad[:3] + good[3000:] + bad[3:] + late
    produce_events(run.settings, run.topics.events, mixed)

    port = free_port()
    log = run.tmp_path / "flow.log"
    flow = features_flow(run.settings, run.key_prefix, log, "--no-recovery", metrics_port=port)
    expected = expected_store(good, run.key_prefix)
    flow.until(lambda: stored(run.redis, run.key_prefix) == expected, "the values")
    dead = ("loopline_features_dead_letters_total",)
    flow.until(
        lambda: sum(v for k, v in flow_metrics(port).items() if k[0] in dead) == 45,
        "45 dead letters",
    )
    m = flow_metrics(port)
    flow.stop()

    assert m[("loopline_features_records_total", ())] == len(mixed)
    assert m[("loopline_features_events_total", ())] == len(good)
    for reason, n in (("malformed", 2), ("invalid", 3), ("late", 40)):
        assert m[("loopline_features_dead_letters_total", (("reason", reason),))] == n
    assert m[("loopline_features_late_events_total", ())] == 40
    assert m[("loopline_features_freshness_seconds_count", ())] > 0
    assert m[("loopline_features_redis_write_seconds_count", ())] > 0
    assert m[("loopline_features_redis_keys_total", (("outcome", "written"),))] >= len(expected)
    lag = [v for k, v in m.items() if k[0] == "loopline_features_consumer_lag"]
    assert len(lag) == 4 and set(lag) == {0.0}

    letters = dead_letters(run.settings, run.topics.dead_letters)
    by_reason: dict[str, list[DeadLetter]] = {}
    for dl in letters:
        by_reason.setdefault(dl.reason, []).append(dl)
    assert sorted(by_reason) == ["invalid", "late", "malformed"]
    assert len(by_reason["malformed"]) == 2 and len(by_reason["invalid"]) == 3
    assert len(by_reason["late"]) == len(late)
    assert {dl.original_value() for dl in by_reason["malformed"]} == {bad[0][1], bad[1][1]}
    assert {json.loads(dl.original_value())["event_id"] for dl in by_reason["late"]} == {
        e["event_id"] for e in late
    }
    for dl in letters:
        assert dl.source_topic == run.topics.events and 0 <= dl.partition < 4 and dl.offset >= 0
        assert dl.error
    assert len({(dl.partition, dl.offset) for dl in letters}) == len(letters)


def test_start_from_end_ignores_history(features_run: FeaturesRun) -> None:
    run = features_run
    old, new = events(2000, seed=5, part=(0, 2)), events(2000, seed=6, part=(1, 2))
    produce_events(run.settings, run.topics.events, old)
    port = free_port()
    env_flow = features_flow(
        run.settings,
        run.key_prefix,
        run.tmp_path / "flow.log",
        "--no-recovery",
        metrics_port=port,
        start_from="end",
    )
    lag = "loopline_features_consumer_lag"
    env_flow.until(lambda: sum(k[0] == lag for k in flow_metrics(port)) == 4, "all partitions")
    produce_events(run.settings, run.topics.events, new)
    expected = expected_store(new, run.key_prefix)
    env_flow.until(lambda: stored(run.redis, run.key_prefix) == expected, "only the new values")
    env_flow.stop()


def test_an_applied_earlier_version_runs_beside_the_definitions_own(
    features_run: FeaturesRun,
) -> None:
    """`run features --feature-set-version 1` keeps the old computation's keys fresh."""
    run = features_run
    old = changed_fraud_features()
    registry = run.tmp_path / "registry"
    state = AppliedState(registry)
    state.record("fraud", old.fingerprint, old.describe(), now_ms=1)
    state.record("fraud", FRAUD_FEATURES.fingerprint, FRAUD_FEATURES.describe(), now_ms=2)
    stream = events(4_000, seed=9)
    produce_events(run.settings, run.topics.events, stream)
    env = {"LOOPLINE_REGISTRY__PATH": str(registry)}
    for name, args in {"v1": ("--feature-set-version", "1"), "own": ()}.items():
        flow = features_flow(
            run.settings,
            run.key_prefix,
            run.tmp_path / f"{name}.log",
            *args,
            "--drain",
            "2",
            "--recovery-dir",
            str(run.tmp_path / f"recovery-{name}"),
            extra_env=env,
        )
        flow.wait()
    # Both versions side by side: each under its own fingerprint, each exact.
    expected = {
        **expected_store(stream, run.key_prefix, old),
        **expected_store(stream, run.key_prefix),
    }
    assert stored(run.redis, run.key_prefix) == expected
    bad = features_flow(
        run.settings, run.key_prefix, run.tmp_path / "v9.log", "--feature-set-version", "9",
        extra_env=env,
    )  # fmt: skip
    assert bad.proc.wait(60) == 2
    assert (
        "no applied feature-set version 9 (applied: [1, 2])"
        in (run.tmp_path / "v9.log").read_text()
    )
