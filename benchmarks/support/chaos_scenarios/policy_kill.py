"""``loopline run policy`` killed -9 right after it emitted a retrain event.

The run has its own topics, registry and consumer groups, a champion (v1),
the trainer service and the policy service as real processes. A critical
drift event goes to the drift topic; the moment the policy logs the retrain
event it requested (acknowledged by the broker), it is killed -9, before or
just after it committed the drift offset. The restarted policy re-reads the
uncommitted drift event: it must not request that retrain again (its id is
derived from the drift event ids and the retrain topic's history is replayed
on start). A second drift event then proves the restarted policy is live.
Invariants: each retrain id once on the retrain topic, one trained version
per retrain id, the champion only ever moved by those versions.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from loopline.contracts.schemas import DriftEvent, encode
from support.chaos_readback import topic_messages
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_scenarios._rig import ChaosRun, leftovers, send
from support.chaos_stack import wait_or_fail

NAME = "policy_kill"
SUMMARY = "retrain-policy kill -9 right after emitting a retrain event: the retrain happens once"
MODEL = "fraud"
POLICY = {"min_new_rows": 0, "min_interval_s": 1, "tick_s": 0.2, "max_per_day": 100}


def run(options: ChaosOptions) -> ScenarioResult:
    rig = ChaosRun.start(
        history_events=20_000,
        seed=options.seed,
        sections={"trainer": {"num_trees": 100}, "policy": POLICY},
    )
    try:
        return _run(rig)
    finally:
        rig.close()


def _drift(rig: ChaosRun) -> str:
    event = DriftEvent(
        id=f"de-{uuid.uuid4().hex[:8]}", time_ms=int(time.time() * 1000), kind="concept",
        detector="adwin(binary)", feature="error", statistic_before=0.05, statistic_after=0.3,
        window_before=4000, window_after=200, model_version="1", severity="critical",
    )  # fmt: skip
    send(rig, rig.bench.topics.drift, encode(event), MODEL.encode())
    return event.id


def _retrain_ids(rig: ChaosRun) -> Counter[str]:
    raw = topic_messages(rig.bench.settings.kafka.bootstrap_servers, rig.bench.topics.retrain)
    return Counter(json.loads(m)["id"] for m in raw)


def _drift_ids(rig: ChaosRun, retrain_id: str) -> list[str]:
    raw = topic_messages(rig.bench.settings.kafka.bootstrap_servers, rig.bench.topics.retrain)
    found = [json.loads(m) for m in raw]
    return next((e["drift_event_ids"] for e in found if e["id"] == retrain_id), [])


def _committed(rig: ChaosRun) -> int:
    """The policy group's committed offsets on the drift topic, summed (-1 each when none)."""
    s = rig.bench.settings
    group = f"{rig.bench.tag}-retrain-policy"
    c = Consumer({"bootstrap.servers": s.kafka.bootstrap_servers, "group.id": group})
    try:
        topic = rig.bench.topics.drift
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(tp.offset for tp in got)
    finally:
        c.close()


def _trained(rig: ChaosRun) -> Counter[str]:
    return Counter(
        v.manifest.extra.get("retrain_event_id", "") for v in rig.registry().versions(MODEL)
    )


def _run(rig: ChaosRun) -> ScenarioResult:
    rig.train_champion()
    checks: dict[str, bool] = {}
    details: dict[str, Any] = {}
    rig.proc("trainer", "run", "trainer", *rig.history_args()).start()
    p1 = rig.proc("policy-1", "run", "policy").start()
    wait_or_fail("the policy started", lambda: "retrain-policy" in p1.text() or p1.alive(), 60)
    time.sleep(3)  # joined its group
    before = _committed(rig)
    first_drift = _drift(rig)
    wait_or_fail("the retrain requested", lambda: "retrain requested:" in p1.text(), 120, 0.005)
    p1.kill9()
    killed_at = time.monotonic()
    details["drift_offset_committed_before_kill"] = _committed(rig) != before
    first = _retrain_ids(rig)
    checks["one_retrain_before_restart"] = len(first) == 1 and set(first.values()) == {1}
    (first_id,) = first or ["?"]
    checks["retrain_names_the_drift"] = _drift_ids(rig, first_id) == [first_drift]

    p2 = rig.proc("policy-2", "run", "policy").start()
    wait_or_fail("the restarted policy runs", p2.alive, 30)
    second_drift = _drift(rig)
    wait_or_fail("a second retrain", lambda: len(_retrain_ids(rig)) >= 2, 120, 0.2)
    recovery_s = time.monotonic() - killed_at
    time.sleep(2)  # anything the re-read first drift event would have caused
    ids = _retrain_ids(rig)
    details["retrain_ids"] = dict(ids)
    checks["each_retrain_id_once"] = set(ids.values()) == {1} and len(ids) == 2
    second_id = next(i for i in ids if i != first_id)
    checks["second_retrain_names_only_the_new_drift"] = _drift_ids(rig, second_id) == [second_drift]
    wait_or_fail("both retrains trained", lambda: {first_id, second_id} <= set(_trained(rig)), 300)
    time.sleep(2)
    trained = _trained(rig)
    details["trained"] = dict(trained)
    checks["each_retrain_trained_once"] = trained[first_id] == 1 and trained[second_id] == 1
    reg = rig.registry()
    history = reg.alias_history(MODEL, "champion")
    details["champion_history"] = history
    checks["champion_moved_only_by_them"] = history == ["1", "2", "3"]
    checks["no_leftovers"] = not leftovers(rig.registry_root)
    details["checks"] = checks
    return ScenarioResult(
        scenario=NAME,
        events_sent=2,
        events_acked=2,
        recovery_s=round(recovery_s, 1),
        invariant_ok=all(checks.values()),
        details=details,
    )
