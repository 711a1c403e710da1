"""What a running rollout plan costs serving: shadow and canary against no plan, same run.

The setup is ``serving_latency.py``'s (shared in ``support/``): the real
server (``python -m loopline.serving``, what ``loopline run serve`` runs,
``--processes`` workers) on the local stack (``loopline up``), Redis holding
packed features of 10,000 cards and 1,000 merchants, predictions logged to
Kafka (unique topics, deleted at the end), a temporary registry. The champion
and the candidate are two different 200-tree x 31-leaf LightGBM models,
trained by the trainer on two simulated histories.

Phases alternate so machine noise spreads over all of them (rounds run
forward and backward: none, shadow, canary, canary, shadow, none, ...):

- ``none``: no plan, the champion alone;
- ``shadow``: a running shadow plan, share 1.0: every request is also scored
  by the candidate on the server's background thread and logged a second time;
- ``canary``: a canary plan, share 0.5: half the cards are answered by the
  candidate.

Plans are started and aborted with the real CLI (``loopline --config <the
server's config> models rollout start|abort``: registry record plus an
announcement; the server's registry poll is off, so it follows the
announcement), and a phase starts once the server's
``loopline_serving_rollout_info`` shows the plan (or no plan).

Per phase: one sequential client (client-observed p50/p99, and the server's
own ``total`` stage from its histogram); then throughput at a fixed
concurrency (``--clients`` calls in flight from two load processes); the
server processes' CPU seconds (``/proc``) per 1000 calls; the shadow scores
done, skipped and failed against the calls served; the share of answers the
candidate gave; serving's own per-arm model-run times (what its automatic
abort compares). Figures are pooled per mode over the rounds and reported as
ratios against ``none``: absolute times on a shared 2-core machine are noisy.

Serving runs with its defaults, automatic abort included: a plan that serving
aborted during a phase (a false latency or error regression: the candidate
is as healthy as the champion) is reported, and fails the run.
``--no-auto-abort`` turns it off to measure costs alone.

Run: ``python benchmarks/rollout_shadow_cost.py [--rounds 4] [--latency-seconds 4]
[--load-seconds 3]``. It prints a summary, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
from support.bench_run import BenchRun
from support.clients import Load, make_requests, percentiles, sequential_client
from support.models import TrainedModels
from support.rollout_metrics import (
    ARM_QUANTILES,
    ModeFigures,
    add_deltas,
    arm_buckets,
    counters,
    ratio,
    tree_cpu_seconds,
)
from support.rollout_plans import CANARY_SHARE, Plans
from support.server import (
    histogram_percentiles,
    scrape,
    server_parser,
    start_server,
    stop_server,
)

from loopline.registry.directory import DirectoryRegistry

MODES = ("none", "shadow", "canary")


def wait_shadow_drained(metrics_port: int, timeout_s: float = 5.0) -> dict[str, Any]:
    """A scrape once the shadow counters stop moving (queued rows scored)."""
    last = scrape(metrics_port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = scrape(metrics_port)
        keys = ("shadow_scored", "shadow_skipped", "shadow_error")
        a, b = counters(now["samples"]), counters(last["samples"])
        if all(a.get(k, 0.0) == b.get(k, 0.0) for k in keys):
            return now
        last = now
    return last


def run_phase(
    mode: str,
    *,
    port: int,
    metrics_port: int,
    server_pid: int,
    requests: list[bytes],
    args: argparse.Namespace,
    figures: ModeFigures,
) -> dict[str, float]:
    cpu0 = tree_cpu_seconds(server_pid)
    m0 = scrape(metrics_port)
    seq = np.asarray(sequential_client(port, requests, args.latency_seconds))
    m1 = scrape(metrics_port)
    load = Load(port, 2, max(1, args.clients // 2), args.load_seconds).start()
    lat, errors, _ = load.finish(stop=False)
    m2 = wait_shadow_drained(metrics_port)
    cpu1 = tree_cpu_seconds(server_pid)

    figures.seq_latencies.append(seq)
    add_deltas(figures.server_buckets, m1["buckets"], m0["buckets"])
    runs0, runs2 = arm_buckets(m0["samples"]), arm_buckets(m2["samples"])
    for arm, buckets in runs2.items():
        add_deltas(figures.arm_runs.setdefault(arm, {}), buckets, runs0.get(arm, {}))
    figures.rps.append(load.rate)
    figures.load_latencies.append(lat)
    figures.errors += sum(errors.values())
    figures.cpu_s += cpu1 - cpu0
    d = figures.add_counts(counters(m2["samples"]), counters(m0["samples"]))
    for e, n in errors.most_common(3):
        print(f"    load error x{n}: {e}")
    client = percentiles(seq)
    server = histogram_percentiles(m0["buckets"], m1["buckets"])
    calls = d.get("calls", 0.0)
    return {
        "client_p50": client["p50"],
        "client_p99": client["p99"],
        "server_p50": server["p50"],
        "server_p99": server["p99"],
        "rps": load.rate,
        "cpu_per_1000": (cpu1 - cpu0) / calls * 1000 if calls else float("nan"),
        "calls": calls,
        "scored": d.get("shadow_scored", 0.0),
        "skipped": d.get("shadow_skipped", 0.0),
        "candidate_answers": d.get("candidate_answer_ok", 0.0),
        "errors": sum(errors.values()),
    }


def phase_order(rounds: int) -> list[str]:
    """Forward, then backward, and so on: a linear drift of the machine hits every mode alike.

    >>> phase_order(2)
    ['none', 'shadow', 'canary', 'canary', 'shadow', 'none']
    """
    out: list[str] = []
    for r in range(rounds):
        out += list(MODES) if r % 2 == 0 else list(reversed(MODES))
    return out


# -- the run -------------------------------------------------------------------------
def main() -> None:
    parser = server_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of none, shadow, canary")
    parser.add_argument("--latency-seconds", type=float, default=4.0, help="1-client part")
    parser.add_argument("--load-seconds", type=float, default=3.0, help="throughput part")
    parser.add_argument("--clients", type=int, default=8, help="calls in flight (throughput)")
    parser.add_argument(
        "--no-auto-abort",
        dest="auto_abort",
        action="store_false",
        help="turn serving's automatic abort off (on by default, as in serving)",
    )
    args = parser.parse_args()

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    run = BenchRun.start()
    figures = {mode: ModeFigures() for mode in MODES}
    try:
        print("setup: features in Redis, champion and candidate (200 trees each) in a registry")
        run.write_features()
        registry = DirectoryRegistry(run.work / "registry")
        models = TrainedModels(run.settings, run.work)
        champion = models.publish(registry, seed=0)
        candidate = models.publish(registry, seed=1, alias=None)
        overrides = {} if args.auto_abort else {"rollout": {"auto_abort": False}}
        config = run.server_config(
            registry.root, processes=args.processes, threads=args.threads, overrides=overrides
        )
        proc, port, metrics_port, _lines = start_server(config)
        try:
            print(f"server: {args.processes} processes x {args.threads} threads on :{port}")
            model = champion.manifest.model_name
            plans = Plans(config, registry, model, candidate.manifest.version, metrics_port)
            run_phases(
                plans,
                port=port,
                metrics_port=metrics_port,
                server_pid=proc.pid,
                args=args,
                figures=figures,
            )
        finally:
            stop_server(proc)
    finally:
        run.remove()
    print_summary(figures, plans, args, time.perf_counter() - t_start, load_start)


def run_phases(
    plans: Plans,
    *,
    port: int,
    metrics_port: int,
    server_pid: int,
    args: argparse.Namespace,
    figures: dict[str, ModeFigures],
) -> None:
    """Every phase in :func:`phase_order`, each under its mode's plan; then no plan."""
    requests = make_requests(5000)
    for i, mode in enumerate(phase_order(args.rounds)):
        plan_id = plans.set(mode)
        row = run_phase(
            mode,
            port=port,
            metrics_port=metrics_port,
            server_pid=server_pid,
            requests=requests,
            args=args,
            figures=figures[mode],
        )
        if plan_id and (plans.running() is None or plans.running().plan_id != plan_id):
            ended = plans.registry.rollout(plans.model)
            reason = f"{plan_id} {ended.state}: {ended.reason}"
            figures[mode].aborted.append(reason)
            print(f"  !! the plan ended during the phase: {reason}")
        extra_text = ""
        if mode == "shadow":
            extra_text = f"  shadow scored {row['scored']:.0f}/{row['calls']:.0f} calls"
            extra_text += f" (skipped {row['skipped']:.0f})"
        elif mode == "canary":
            extra_text = f"  candidate answered {row['candidate_answers']:.0f}"
            extra_text += f"/{row['calls']:.0f}"
        print(
            f"  phase {i + 1:2d} {mode:<6} 1 client: client p50 {row['client_p50']:.3f} "
            f"p99 {row['client_p99']:.3f} ms, server p50 {row['server_p50']:.3f} "
            f"p99 {row['server_p99']:.3f} ms; {args.clients} clients: "
            f"{row['rps']:.0f} calls/s; CPU {row['cpu_per_1000']:.3f} s/1000 calls"
            f"{extra_text}",
            flush=True,
        )
    plans.set("none")


def print_summary(
    figures: dict[str, ModeFigures],
    plans: Plans,
    args: argparse.Namespace,
    took_s: float,
    load_start: tuple[float, float, float],
) -> None:
    s = {mode: figures[mode].summary() for mode in MODES}
    load_end = os.getloadavg()
    keys = (
        ("client_p50_ms", "client p50 ms"),
        ("client_p99_ms", "client p99 ms"),
        ("server_p50_ms", "server p50 ms"),
        ("server_p99_ms", "server p99 ms"),
        ("rps", f"calls/s at {args.clients}"),
        ("load_p99_ms", f"p99 ms at {args.clients}"),
        ("cpu_s_per_1000", "CPU s/1000 calls"),
    )
    print()
    print(
        f"summary ({took_s:.0f} s, {args.rounds} rounds, "
        f"{os.cpu_count()} cores shared by clients and servers; load average "
        f"{load_start[0]:.2f} -> {load_end[0]:.2f}):"
    )
    print(
        f"  {'':<20}{'none':>10}{'shadow':>10}{'canary':>10}{'shadow/none':>13}{'canary/none':>13}"
    )
    for key, label in keys:
        none, shadow, canary = (s[m][key] for m in MODES)
        print(
            f"  {label:<20}{none:>10.3f}{shadow:>10.3f}{canary:>10.3f}"
            f"{ratio(shadow, none):>13.3f}{ratio(canary, none):>13.3f}"
        )
    sh, ca = s["shadow"], s["canary"]
    print(
        f"  shadow scores: {sh['shadow_scored']:.0f} scored, {sh['shadow_skipped']:.0f} skipped, "
        f"{sh['shadow_error']:.0f} failed, for {sh['calls']:.0f} calls in shadow phases "
        f"({ratio(sh['shadow_scored'], sh['calls']):.1%})"
    )
    print(
        f"  canary: the candidate answered {ca['candidate_answer_share']:.1%} of calls "
        f"(share {CANARY_SHARE:.0%} of cards)"
    )
    print(
        f"  failed calls: {sum(s[m]['errors'] for m in MODES)}; plan followed in "
        f"{np.median(plans.follow_s) * 1000:.0f} ms (median, CLI start to server report)"
    )
    for mode, path in (("shadow", "shadow"), ("canary", "answer")):
        f = s[mode]
        if "candidate_run_p90_ms" in f and "champion_run_p90_ms" in f:
            print(
                f"  model run in {mode} phases (serving's timing, what its auto-abort compares): "
                f"champion p50 {f['champion_run_p50_ms']:.3f} p90 {f['champion_run_p90_ms']:.3f}"
                f" ms, candidate ({path} path) p50 {f['candidate_run_p50_ms']:.3f} p90 "
                f"{f['candidate_run_p90_ms']:.3f} ms"
            )
    aborted = [a for m in MODES for a in figures[m].aborted]
    for a in aborted:
        print(f"  !! plan ended by itself: {a}")

    result: dict[str, Any] = {}
    for mode in MODES:
        for key, _ in keys:
            result[f"{mode}_{key}"] = round(s[mode][key], 4)
    for mode in ("shadow", "canary"):
        for key, _ in keys:
            result[f"{mode}_over_none_{key}"] = round(ratio(s[mode][key], s["none"][key]), 4)
    for mode in ("shadow", "canary"):
        for arm in ("champion", "candidate"):
            for q, _ in ARM_QUANTILES:
                key = f"{arm}_run_{q}_ms"
                if key in s[mode]:
                    result[f"{mode}_{key}"] = round(s[mode][key], 4)
    result.update(
        {
            "auto_abort": args.auto_abort,
            "shadow_calls": int(sh["calls"]),
            "shadow_scored": int(sh["shadow_scored"]),
            "shadow_skipped": int(sh["shadow_skipped"]),
            "shadow_errors": int(sh["shadow_error"]),
            "canary_candidate_answer_share": round(ca["candidate_answer_share"], 4),
            "failed_calls": int(sum(s[m]["errors"] for m in MODES)),
            "plans_ended_by_server": len(aborted),
            "plan_follow_ms_p50": round(float(np.median(plans.follow_s)) * 1000, 1),
            "rounds": args.rounds,
            "load_avg_1m_start": round(load_start[0], 2),
            "load_avg_1m_end": round(load_end[0], 2),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
