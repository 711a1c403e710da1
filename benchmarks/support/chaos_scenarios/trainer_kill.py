"""``loopline run trainer`` killed -9 mid-training and between publish and placement.

Two kills of the real service on the run's own topics and registry:

1. during LightGBM training (the log says ``training: train``): nothing may be
   published, the champion untouched; the restarted service trains the
   redelivered event once.
2. after the version is published but before the champion alias moves: the
   scenario holds the model's registry lock (the alias move waits on it), so
   the kill lands exactly in that window. The published version must be
   complete, and once restarted the service must place it (champion) without
   training the event a second time.

Then the same event id is sent again: it must be recognised as a duplicate.
"""

from __future__ import annotations

import fcntl
import time
import uuid
from typing import Any

from loopline.contracts.schemas import RetrainEvent, encode
from loopline.registry.directory import sha256_hex
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_scenarios._rig import ChaosRun, leftovers, send
from support.chaos_stack import wait_or_fail

NAME = "trainer_kill"
SUMMARY = "trainer kill -9 mid-training and mid-publish: one retrain per event, champion intact"
MODEL = "fraud"


def run(options: ChaosOptions) -> ScenarioResult:
    rig = ChaosRun.start(
        history_events=20_000, seed=options.seed, sections={"trainer": {"num_trees": 400}}
    )
    try:
        return _run(rig)
    finally:
        rig.close()


def _send(rig: ChaosRun, event_id: str) -> None:
    event = RetrainEvent(id=event_id, time_ms=int(time.time() * 1000), trigger="manual",
                         reason="chaos")  # fmt: skip
    send(rig, rig.bench.topics.retrain, encode(event), MODEL.encode())


def _versions_of(rig: ChaosRun, event_id: str) -> list[str]:
    return [
        v.manifest.version
        for v in rig.registry().versions(MODEL)
        if v.manifest.extra.get("retrain_event_id") == event_id
    ]


def _complete(rig: ChaosRun) -> bool:
    """Every listed version has its model and a manifest whose sha256 matches it."""
    for v in rig.registry().versions(MODEL):
        if not v.model_path.exists() or sha256_hex(v.model_path.read_bytes()) != v.manifest.sha256:
            return False
    return True


def _run(rig: ChaosRun) -> ScenarioResult:
    rig.train_champion()
    reg = rig.registry()
    details: dict[str, Any] = {"champion_before": reg.aliases(MODEL).get("champion")}
    checks: dict[str, bool] = {}
    trainer_args = ("run", "trainer", *rig.history_args())

    # 1. kill -9 while LightGBM trains
    first = f"chaos-{uuid.uuid4().hex[:8]}"
    t1 = rig.proc("trainer-1", *trainer_args).start()
    _send(rig, first)
    wait_or_fail("trainer reaches training", lambda: "training: train" in t1.text(), 120, 0.02)
    time.sleep(0.3)
    t1.kill9()
    killed_at = time.monotonic()
    checks["train_kill_nothing_published"] = [v.manifest.version for v in reg.versions(MODEL)] == [
        "1"
    ]
    checks["train_kill_champion_untouched"] = reg.aliases(MODEL).get("champion") == "1"
    details["train_kill_leftovers"] = leftovers(rig.registry_root)
    t2 = rig.proc("trainer-2", *trainer_args).start()
    wait_or_fail("the redelivered event trained", lambda: _versions_of(rig, first), 300)
    wait_or_fail("its champion", lambda: reg.aliases(MODEL).get("champion") != "1", 30)
    recovery_train = time.monotonic() - killed_at
    checks["train_kill_trained_once"] = len(_versions_of(rig, first)) == 1
    details["train_kill_versions"] = _versions_of(rig, first)

    # 2. kill -9 between publish and the champion alias move (the lock holds it there)
    second = f"chaos-{uuid.uuid4().hex[:8]}"
    champion = reg.aliases(MODEL)["champion"]
    lock_path = rig.registry_root / MODEL / ".lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _send(rig, second)
        wait_or_fail("the second event published", lambda: _versions_of(rig, second), 300)
        time.sleep(0.5)  # the trainer now waits on the lock to move the alias
        t2.kill9()
        killed_at = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_UN)
    checks["publish_kill_champion_untouched"] = reg.aliases(MODEL).get("champion") == champion
    checks["publish_kill_versions_complete"] = _complete(rig)
    details["publish_kill_leftovers"] = leftovers(rig.registry_root)
    t3 = rig.proc("trainer-3", *trainer_args).start()
    placed = _versions_of(rig, second)
    try:
        wait_or_fail("the stranded version placed", lambda: reg.aliases(MODEL).get("champion")
                 in placed, 120)  # fmt: skip
        recovery_publish: float | None = time.monotonic() - killed_at
    except TimeoutError:
        recovery_publish = None
    checks["publish_kill_champion_placed"] = recovery_publish is not None
    checks["publish_kill_trained_once"] = len(_versions_of(rig, second)) == 1

    # 3. the same id again: a duplicate
    _send(rig, second)
    wait_or_fail("the duplicate seen", lambda: f"retrain {second}: duplicate" in t3.text(), 120)
    checks["duplicate_not_retrained"] = len(_versions_of(rig, second)) == 1
    checks["no_leftovers_after_restart"] = not leftovers(rig.registry_root)
    details["leftovers_after_restart"] = leftovers(rig.registry_root)
    details["versions"] = [
        (v.manifest.version, v.manifest.status, v.manifest.extra.get("retrain_event_id", ""))
        for v in reg.versions(MODEL)
    ]
    details["champion_after"] = reg.aliases(MODEL).get("champion")
    details["recovery_s"] = {
        "train_kill": round(recovery_train, 1),
        "publish_kill": recovery_publish and round(recovery_publish, 1),
    }
    details["checks"] = checks
    return ScenarioResult(
        scenario=NAME,
        events_sent=3,
        events_acked=3,
        recovery_s=round(max(recovery_train, recovery_publish or 0.0), 1),
        invariant_ok=all(checks.values()),
        details=details,
    )
