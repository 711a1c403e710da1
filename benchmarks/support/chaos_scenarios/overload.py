"""Predict at twice the server's capacity: shed fast, keep the admitted calls fast.

One serving replica with its default limits (``serving.threads``,
``serving.max_concurrent_rpcs``) on fixed features. First its capacity is
measured with closed-loop clients; then clients offer twice that rate for
``options.seconds`` with up to twice ``serving.max_concurrent_rpcs`` calls in
flight (so the server's limit, not the clients', decides what is admitted).
Checked: the server sheds the excess with RESOURCE_EXHAUSTED quickly (p99 of a
refusal), the p99 of the calls it admits stays within the budget, no call
hangs to its deadline, and the server is still up and answering at the end.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from loopline.contracts.settings import ServingSettings
from loopline.featurerepo.loader import builtin_example, load_project
from support.chaos_load import PredictLoop, latency_summary
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_services import fixed_serving
from support.chaos_stack import PrivateStack

NAME = "overload"
SUMMARY = "Predict at 2x capacity: RESOURCE_EXHAUSTED fast, admitted p99 within budget, no crash"
CAPACITY_S = 8.0
IN_FLIGHT = 2 * ServingSettings().max_concurrent_rpcs
DEADLINE_S = 1.0
# What an admitted call may take at p99, and a refusal, on this shared 2-core machine.
ADMITTED_P99_BUDGET_MS = 100.0
REFUSAL_P99_BUDGET_MS = 50.0


def run(options: ChaosOptions) -> ScenarioResult:
    work = Path(tempfile.mkdtemp(prefix="chaos-overload-"))
    fs = load_project(builtin_example()).feature_set()
    with PrivateStack(work) as stack:
        serve, port, _metrics, pool = fixed_serving(stack, fs, options, replicas=1, pool=400)
        target = f"127.0.0.1:{port}"

        def requests(r: random.Random):
            return pool[r.randrange(len(pool))]

        probe = PredictLoop(target, threads=8, rate=None, deadline_s=DEADLINE_S, requests=requests)
        probe.start()
        time.sleep(CAPACITY_S)
        measured = probe.stop()
        capacity = measured.ok / CAPACITY_S
        load = PredictLoop(
            target, threads=IN_FLIGHT, rate=2 * capacity, deadline_s=DEADLINE_S, requests=requests
        )
        started = time.monotonic()
        load.start()
        time.sleep(options.seconds)
        calls = load.stop()
        offered = calls.calls / (time.monotonic() - started)
        after = PredictLoop(target, threads=1, rate=20, deadline_s=DEADLINE_S, requests=requests)
        after.start()
        time.sleep(2)
        still = after.stop()
        alive = serve.alive()
        serve.stop()
    admitted = latency_summary(calls.latencies_by_code.get("OK", []))
    refused = latency_summary(calls.latencies_by_code.get("RESOURCE_EXHAUSTED", []))
    shed = len(calls.latencies_by_code.get("RESOURCE_EXHAUSTED", []))
    timed_out = len(calls.latencies_by_code.get("DEADLINE_EXCEEDED", []))
    checks = {
        "sheds_with_resource_exhausted": shed > 0,
        "refusals_fast": shed > 0 and refused["p99_ms"] <= REFUSAL_P99_BUDGET_MS,
        "admitted_p99_within_budget": admitted["p99_ms"] <= ADMITTED_P99_BUDGET_MS,
        "no_call_hangs_to_its_deadline": timed_out == 0,
        "no_crash": alive and still.failed == 0 and still.ok > 0,
    }
    return ScenarioResult(
        scenario=NAME,
        predict_calls=calls.calls,
        predict_failed=calls.failed,
        predict_degraded=calls.degraded,
        recovery_s=None,
        invariant_ok=all(checks.values()),
        details={
            "checks": checks,
            "capacity_per_s": round(capacity, 1),
            "offered_per_s": round(offered, 1),
            "offered_ratio": round(offered / capacity, 2) if capacity else None,
            "admitted_per_s": round(calls.ok / options.seconds, 1),
            "shed": shed,
            "deadline_exceeded": timed_out,
            "codes": dict(calls.codes),
            "admitted_latency": admitted,
            "refusal_latency": refused,
            "capacity_probe_latency": latency_summary(measured.latencies_s),
            "work": str(work),
        },
    )
