"""Predict at twice the server's capacity: shed fast, keep the admitted calls fast.

One serving replica with its default limits (``serving.threads``,
``serving.max_concurrent_rpcs``) on fixed features. First its capacity is
measured with closed-loop clients; then clients offer twice that rate for
``options.seconds`` with up to twice the server's call limit in flight (so the
server's limit, not the clients', decides what is admitted). Twice: with a
deep queue of 64 calls (the baseline: gRPC's habit, and Loopline's default
before this scenario), then with the default limit (``2 x serving.threads``),
on which the checks are judged.
Checked: the server sheds the excess with RESOURCE_EXHAUSTED quickly (p99 of a
refusal), the p99 of the calls it admits stays within the budget, no call
hangs to its deadline, and the server is still up and answering at the end.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from loopline.contracts.settings import ServingSettings
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import builtin_example, load_project
from support.chaos_load import PredictLoop
from support.chaos_readback import latency_summary
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_services import fixed_serving
from support.chaos_stack import PrivateStack
from support.server import histogram_percentiles, scrape

NAME = "overload"
SUMMARY = "Predict at 2x capacity: RESOURCE_EXHAUSTED fast, admitted p99 within budget, no crash"
CAPACITY_S = 8.0
DEEP_QUEUE = 64
DEADLINE_S = 1.0
# What an admitted call may take at p99 in the server, and a refusal at the client.
ADMITTED_P99_BUDGET_MS = 100.0
REFUSAL_P99_BUDGET_MS = 50.0


def run(options: ChaosOptions) -> ScenarioResult:
    work = Path(tempfile.mkdtemp(prefix="chaos-overload-"))
    fs = load_project(builtin_example()).feature_set()
    with PrivateStack(work) as stack:
        # A deep queue first (the baseline: 64, gRPC's habit and the default before
        # this scenario), then the default limit, two calls per RPC thread.
        baseline = _phase(stack, fs, options, DEEP_QUEUE)
        tight = _phase(stack, fs, options, ServingSettings().rpc_limit)
    checks = {
        "sheds_with_resource_exhausted": tight["shed"] > 0,
        "refusals_fast": tight["refusal_latency"]["p99_ms"] <= REFUSAL_P99_BUDGET_MS,
        "admitted_p99_within_budget": tight["server_p99_ms"] <= ADMITTED_P99_BUDGET_MS,
        "no_call_hangs_to_its_deadline": tight["deadline_exceeded"] == 0,
        "no_crash": baseline["alive"] and tight["alive"],
    }
    return ScenarioResult(
        scenario=NAME,
        predict_calls=tight["calls"],
        predict_failed=tight["failed"],
        predict_degraded=tight["degraded"],
        recovery_s=None,
        invariant_ok=all(checks.values()),
        details={"checks": checks, "baseline": baseline, "limited": tight, "work": str(work)},
    )


def _phase(
    stack: PrivateStack, fs: FeatureSet, options: ChaosOptions, limit: int
) -> dict[str, Any]:
    """One server with ``serving.max_concurrent_rpcs = limit``: its capacity, then 2x."""
    overrides = {"serving": {"max_concurrent_rpcs": limit}}
    serve, port, metrics_port, pool = fixed_serving(
        stack, fs, options, replicas=1, pool=400, overrides=overrides
    )
    target = f"127.0.0.1:{port}"

    def requests(r: random.Random) -> Any:
        return pool[r.randrange(len(pool))]

    probe = PredictLoop(target, threads=8, rate=None, deadline_s=DEADLINE_S, requests=requests)
    probe.start()
    time.sleep(CAPACITY_S)
    measured = probe.stop()
    capacity = measured.ok / CAPACITY_S
    # Twice the limit in flight: the server's limit, not the clients', decides.
    load = PredictLoop(
        target, threads=2 * limit, rate=2 * capacity, deadline_s=DEADLINE_S, requests=requests
    )
    before = scrape(metrics_port)["buckets"]
    started = time.monotonic()
    load.start()
    time.sleep(options.seconds)
    calls = load.stop()
    window = time.monotonic() - started
    server = histogram_percentiles(before, scrape(metrics_port)["buckets"])
    after = PredictLoop(target, threads=1, rate=20, deadline_s=DEADLINE_S, requests=requests)
    after.start()
    time.sleep(2)
    still = after.stop()
    alive = serve.alive() and still.ok > 0 and still.failed == 0
    serve.stop()
    by_code = calls.latencies_by_code
    return {
        "max_concurrent_rpcs": limit,
        "capacity_per_s": round(capacity, 1),
        "offered_ratio": round(calls.calls / window / capacity, 2) if capacity else None,
        "admitted_per_s": round(calls.ok / window, 1),
        "calls": calls.calls,
        "failed": calls.failed,
        "degraded": calls.degraded,
        "shed": len(by_code.get("RESOURCE_EXHAUSTED", [])),
        "deadline_exceeded": len(by_code.get("DEADLINE_EXCEEDED", [])),
        "admitted_latency": latency_summary(by_code.get("OK", [])),
        "refusal_latency": latency_summary(by_code.get("RESOURCE_EXHAUSTED", [])),
        "server_p50_ms": round(server["p50"], 2),
        "server_p99_ms": round(server["p99"], 2),
        "alive": alive,
    }
