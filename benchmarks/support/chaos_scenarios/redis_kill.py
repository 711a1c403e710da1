"""Redis kill -9 and restart under load, with the persistence Loopline recommends.

The private Redis runs as ``stack.redis_persistence = true`` configures it:
append-only file, ``appendfsync everysec``, no RDB snapshots (they fork and
stall). Mid-stream it gets SIGKILL, stays down a few seconds and is started
again on its append-only file. Checked: serving answers throughout, degraded
(defaults or last-known values, flagged per feature) while Redis is away and
fresh again afterwards; the features flow survives or, if it stops, resumes
from its snapshot; the online store ends equal to the offline replay of the
acked events, on its own or after ``loopline backfill`` (timed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from loopline.featurerepo.loader import builtin_example, load_project
from support.chaos_readback import latency_summary, mismatched
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_services import features_caught_up, loop_result, server_calls_over, start_loop
from support.chaos_stack import PrivateStack, Service

NAME = "redis_kill"
SUMMARY = "Redis kill -9 + restart (AOF everysec): Predict degraded meanwhile, features exact after"
DOWN_S = 5.0
PREDICT_DEADLINE_S = 0.5


def run(options: ChaosOptions) -> ScenarioResult:
    return run_redis_kill(options, NAME, persistence=True)


def run_redis_kill(options: ChaosOptions, name: str, *, persistence: bool) -> ScenarioResult:
    """The scenario, with Redis persisting (append-only file) or not (it restarts empty)."""
    work = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
    fs = load_project(builtin_example()).feature_set()
    with PrivateStack(work, redis_persistence=persistence) as stack:
        loop = start_loop(stack, options, PREDICT_DEADLINE_S)
        flow, serve, metrics_port = loop.flow, loop.serve, loop.metrics_port
        events, predict = loop.events, loop.predict
        flow_restarted = False
        try:
            time.sleep(options.seconds / 3)
            killed_at = time.monotonic()
            stack.kill("redis")
            time.sleep(DOWN_S)
            restart_s = stack.restart("redis")
            restarted_at = time.monotonic()
            # The flow may have given up on Redis meanwhile: restart it as an orchestrator would.
            time.sleep(2)
            if not flow.alive():
                flow_restarted = True
                flow.start()
            time.sleep(max(0.0, options.seconds * 2 / 3 - (time.monotonic() - killed_at)))
        finally:
            calls = predict.stop()
            events.stop()
        acked = events.acked_events()
        features, caught_up_s = features_caught_up(stack, fs, acked, 60)
        backfill: dict[str, object] = {}
        if caught_up_s is None:
            started = time.monotonic()
            job = Service(["backfill"], stack.env(), work / "backfill.log")
            code = job.proc.wait(600) if job.proc else None
            after, _ = features_caught_up(stack, fs, acked, 10)
            backfill = {
                "exit": code,
                "seconds": round(time.monotonic() - started, 1),
                "features_after": after,
                "summary": job.tail(400).strip().splitlines()[-1:],
            }
        over, served = server_calls_over(metrics_port, PREDICT_DEADLINE_S)
        flow_alive, serve_alive = flow.alive(), serve.alive()
        flow_log = flow.tail(1500)
        flow.stop()
        serve.stop()
    during = [t for t in calls.defaulted_at if t >= killed_at]
    recovery_s = (max(during) - killed_at) if during else None
    after = backfill.get("features_after")
    exact = caught_up_s is not None or (isinstance(after, dict) and not mismatched(after))
    checks = {
        # Judged in the server: the clients share 2 cores with everything else, and
        # a starved client misses deadlines the server met (client failures: details).
        "predict_within_deadline": over == 0 and set(calls.codes) <= {"DEADLINE_EXCEEDED"},
        "degraded_while_down": bool(during),
        "fresh_again_after": recovery_s is not None and recovery_s < DOWN_S + restart_s + 30,
        "features_equal_clean_run": exact,
        "serving_alive": serve_alive,
        "flow_alive": flow_alive,
    }
    return loop_result(
        name,
        events,
        calls,
        lost=0,
        recovery_s=recovery_s,
        checks=checks,
        details={
            "redis_restart_s": round(restart_s, 1),
            "predict_defaulted": calls.defaulted,
            "predict_defaulted_after_restart": sum(t > restarted_at for t in during),
            "flow_exited_and_restarted": flow_restarted,
            "features_without_backfill": features,
            "features_caught_up_s": caught_up_s,
            "backfill": backfill,
            "predict_latency": latency_summary(calls.latencies_s),
            "server_calls_over_deadline": over,
            "server_calls": served,
            "predict_codes": dict(calls.codes),
            "flow_log_tail": flow_log[-300:] if flow_restarted else "",
            "work": str(work),
        },
    )
