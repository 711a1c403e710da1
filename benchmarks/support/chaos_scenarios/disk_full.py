"""The registry's file system full, then read-only, while a new version is published.

The registry lives on its own small tmpfs (``mount -t tmpfs -o size=...``,
so the scenario needs root; without it, it says so and fails). A champion v1
is published and served by a real server (Predict calls all along); then:

1. the tmpfs is filled to a few KiB: ``loopline train`` must fail with one
   line (a ``RegistryWriteError``), exit 2, and leave no half-written version;
2. space is freed and the tmpfs remounted read-only: the same;
3. ``loopline run trainer`` gets a retrain event on the read-only registry: it
   defers the event (nothing recorded or committed) and keeps running;
4. the tmpfs is remounted writable: the trainer's next try publishes v2, which
   is served. Recovery is the time from the remount to the first answer by v2
   (the trainer's backoff doubles from 5 s, so it depends on how long the
   registry was read-only).

Throughout, every Predict call must be answered, by v1 until v2 is champion.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from loopline.contracts.schemas import RetrainEvent, encode
from loopline.registry.directory import sha256_hex
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_scenarios._rig import ChaosRun, Pinger, leftovers, send
from support.chaos_stack import wait_or_fail
from support.server import start_server, stop_server

NAME = "disk_full"
SUMMARY = "registry on a full, then read-only tmpfs during publish: clean error, v1 keeps serving"
MODEL = "fraud"
TMPFS_BYTES = 16 * 1024 * 1024
SERVING = {"port": 0, "metrics_port": 0, "processes": 1, "threads": 2, "registry_poll_s": 1}


def run(options: ChaosOptions) -> ScenarioResult:
    rig = ChaosRun.start(
        history_events=20_000,
        seed=options.seed,
        sections={"trainer": {"num_trees": 100}, "serving": SERVING},
    )
    mount = rig.registry_root
    mount.mkdir(parents=True)
    try:
        _mount(mount)
    except subprocess.CalledProcessError as e:
        rig.close()
        detail = f"cannot mount a tmpfs (needs root): {e.stderr.strip()}"
        return ScenarioResult(NAME, invariant_ok=False, details={"error": detail})
    try:
        return _run(rig, mount)
    finally:
        rig.close()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _mount(path: Path, *options: str) -> None:
    opts = ",".join((f"size={TMPFS_BYTES}", *options))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def _fill(path: Path, leave_bytes: int = 8192) -> Path:
    """Fill the file system of ``path`` but ``leave_bytes``; returns the filler file."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free - leave_bytes
    with filler.open("wb") as f:
        chunk = b"\0" * (1 << 20)
        while free > 0:
            try:
                f.write(chunk[: min(len(chunk), free)])
                f.flush()
            except OSError:
                break
            free -= len(chunk)
    return filler


def _train_cli(rig: ChaosRun, name: str) -> tuple[int, str]:
    p = rig.proc(name, "train", "--no-announce", *rig.history_args()).start()
    assert p.proc is not None
    return p.proc.wait(300), p.text()


def _intact(rig: ChaosRun) -> bool:
    reg = rig.registry()
    versions = reg.versions(MODEL)
    return [v.manifest.version for v in versions] == ["1"] and all(
        sha256_hex(v.model_path.read_bytes()) == v.manifest.sha256 for v in versions
    )


def _failure(rig: ChaosRun, name: str, checks: dict[str, bool], details: dict[str, Any]) -> None:
    code, text = _train_cli(rig, name)
    errors = [line for line in text.splitlines() if "error:" in line]
    details[f"{name}_cli"] = errors[-1] if errors else text[-400:]
    checks[f"{name}_exit_2"] = code == 2  # the CLI's exit status for a LooplineError
    checks[f"{name}_one_line_registry_error"] = (
        len(errors) == 1
        and "could not write a new version" in errors[0]
        and "Traceback" not in text
    )
    checks[f"{name}_registry_intact"] = _intact(rig)
    checks[f"{name}_champion_untouched"] = rig.registry().aliases(MODEL).get("champion") == "1"
    details[f"{name}_leftovers"] = leftovers(rig.registry_root)
    checks[f"{name}_no_leftovers"] = not details[f"{name}_leftovers"]


def _retrain(rig: ChaosRun) -> str:
    event_id = f"chaos-{uuid.uuid4().hex[:8]}"
    event = RetrainEvent(event_id, int(time.time() * 1000), "manual", "chaos: disk")
    send(rig, rig.bench.topics.retrain, encode(event), MODEL.encode())
    return event_id


def _run(rig: ChaosRun, mount: Path) -> ScenarioResult:
    rig.train_champion()
    checks: dict[str, bool] = {}
    details: dict[str, Any] = {"file_system": f"tmpfs of {TMPFS_BYTES >> 20} MiB"}
    server, port, _, _ = start_server(rig.config)
    pinger = Pinger(port).start()
    fixed_at = float("inf")
    try:
        wait_or_fail("v1 answers", lambda: pinger.versions_since(0) == {"1"}, 60)
        filler = _fill(mount)
        details["free_bytes_when_full"] = shutil.disk_usage(mount).free
        _failure(rig, "full", checks, details)
        filler.unlink()
        _remount(mount, "ro")
        _failure(rig, "read_only", checks, details)

        trainer = rig.proc("trainer", "run", "trainer", *rig.history_args()).start()
        refused = _retrain(rig)
        wait_or_fail("the refused retrain", lambda: f"retrain {refused}:" in trainer.text(), 300)
        line = next(x for x in trainer.text().splitlines() if f"retrain {refused}:" in x)
        details["service_line"] = line[line.index("retrain") :][:300]
        checks["service_defers_the_event"] = "deferred" in line and "RegistryWriteError" in line
        checks["service_keeps_running"] = trainer.alive()

        _remount(mount, "rw")
        fixed_at = time.monotonic()
        wait_or_fail("v2 served", lambda: "2" in pinger.versions_since(fixed_at), 600)
        recovery_s = time.monotonic() - fixed_at
        details["after_fix_versions"] = [v.manifest.version for v in rig.registry().versions(MODEL)]
        checks["published_after_fix"] = details["after_fix_versions"] == ["1", "2"]
        v2 = rig.registry().get(MODEL, "2").manifest
        checks["v2_is_the_deferred_event"] = v2.extra.get("retrain_event_id") == refused
    finally:
        calls = pinger.stop()
        stop_server(server)
    served = {c.version for c in calls if c.ok and c.at < fixed_at}
    checks["v1_served_throughout"] = served == {"1"}
    checks["no_failed_predict"] = pinger.failed() == 0
    details["checks"] = checks
    return ScenarioResult(
        scenario=NAME,
        events_sent=1,
        events_acked=1,
        predict_calls=len(calls),
        predict_failed=pinger.failed(),
        predict_degraded=sum(c.degraded for c in calls),
        recovery_s=round(recovery_s, 1),
        invariant_ok=all(checks.values()),
        details=details,
    )
