"""What a running rollout plan costs serving: shadow and canary against no plan, same run.

The setup is ``serving_latency.py``'s (its helpers are imported): the real
server (``python -m loopline.serving``, what ``loopline run serve`` runs,
``--processes`` workers) on the local stack (``loopline up``), Redis holding
packed features of 10,000 cards and 1,000 merchants, predictions logged to
Kafka (unique topics, deleted at the end), a temporary registry. The champion
and the candidate are two different 200-tree x 31-leaf LightGBM models.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from serving_latency import (
    Load,
    bench_setup,
    histogram_percentiles,
    make_requests,
    percentiles,
    remove_bench_data,
    scrape,
    sequential_client,
    start_server,
    stop_server,
    write_config,
    write_features,
)

MODES = ("none", "shadow", "canary")
SHADOW_SHARE = 1.0
CANARY_SHARE = 0.5
FOLLOW_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The rollout policy compares the arms' model-run p90 (rollout.latency_quantile).
ARM_QUANTILES = (("p50", 0.5), ("p90", 0.9))


# -- the server's state, from /metrics and /proc ------------------------------------
def counters(samples: list[Any]) -> dict[str, float]:
    """The rollout counters of one scrape, flattened (calls: the ``total`` stage count)."""
    out: dict[str, float] = {}
    for s in samples:
        if s.name == "loopline_serving_shadow_total":
            out[f"shadow_{s.labels['result']}"] = s.value
        elif s.name == "loopline_serving_arm_calls_total":
            out[f"{s.labels['arm']}_{s.labels['path']}_{s.labels['result']}"] = s.value
        elif s.name == "loopline_serving_stage_seconds_count" and s.labels["stage"] == "total":
            out["calls"] = s.value
    return out


def arm_buckets(samples: list[Any]) -> dict[str, dict[float, float]]:
    """Per arm, the cumulative buckets of serving's model-run histogram (one row per run)."""
    out: dict[str, dict[float, float]] = {}
    for s in samples:
        if s.name == "loopline_serving_arm_model_seconds_bucket":
            out.setdefault(s.labels["arm"], {})[float(s.labels["le"])] = s.value
    return out


def add_deltas(
    into: dict[float, float], after: dict[float, float], before: dict[float, float]
) -> None:
    for b, v in after.items():
        into[b] = into.get(b, 0.0) + v - before.get(b, 0.0)


def running_plans(samples: list[Any]) -> set[str]:
    """Plan ids the server reports as running (``rollout_info`` == 1)."""
    return {
        s.labels["plan_id"]
        for s in samples
        if s.name == "loopline_serving_rollout_info" and s.value >= 1
    }


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and its live descendants (the supervisor's workers)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue  # ended meanwhile
        rest = raw[raw.rindex(")") + 2 :].split()  # fields from 3 on (state, ppid, ...)
        parent[int(entry)] = int(rest[1])
        cpu[int(entry)] = (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime, stime
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [p for p, pp in parent.items() if pp == pid]
    return total


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


# -- plans -------------------------------------------------------------------------
class Plans:
    """Start and abort plans with the real CLI; wait until the server follows."""

    def __init__(self, config: Path, registry: Any, model: str, candidate: str, metrics_port: int):
        from loopline.cli import main as loopline_cli

        self.cli = loopline_cli
        self.config = config
        self.registry = registry
        self.model = model
        self.candidate = candidate
        self.metrics_port = metrics_port
        self.follow_s: list[float] = []

    def _run(self, *argv: str) -> None:
        code = self.cli(["--config", str(self.config), "models", "rollout", *argv])
        if code != 0:
            raise SystemExit(f"loopline models rollout {' '.join(argv)}: exit code {code}")

    def running(self) -> Any:
        plan = self.registry.rollout(self.model)
        return plan if plan is not None and plan.running else None

    def set(self, mode: str) -> str:
        """End any running plan, start ``mode``'s; returns its plan id ('' for none)."""
        plan = self.running()
        if plan is not None:
            self._run("abort", "--reason", "benchmark phase over")
            self._wait(lambda ids: plan.plan_id not in ids, f"the end of {plan.plan_id}")
        if mode == "none":
            return ""
        share = SHADOW_SHARE if mode == "shadow" else CANARY_SHARE
        t0 = time.perf_counter()
        self._run("start", self.candidate, "--mode", mode, "--share", str(share))
        plan_id = self.running().plan_id
        self._wait(lambda ids: plan_id in ids, f"plan {plan_id}")
        self.follow_s.append(time.perf_counter() - t0)
        # rollout_info is a max over the workers: give the slower one a moment too.
        time.sleep(1.0)
        return plan_id

    def _wait(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        while not done(running_plans(scrape(self.metrics_port)["samples"])):
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not follow {what} in {FOLLOW_TIMEOUT_S:.0f} s")
            time.sleep(0.05)


# -- one phase ---------------------------------------------------------------------
@dataclass
class ModeFigures:
    """One mode's figures pooled over its rounds."""

    seq_latencies: list[np.ndarray] = field(default_factory=list)
    server_buckets: dict[float, float] = field(default_factory=dict)
    rps: list[float] = field(default_factory=list)
    load_latencies: list[np.ndarray] = field(default_factory=list)
    errors: int = 0
    counts: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0
    arm_runs: dict[str, dict[float, float]] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)

    def add_counts(self, after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
        d = {k: delta(after, before, k) for k in set(after) | set(before)}
        for k, v in d.items():
            self.counts[k] = self.counts.get(k, 0.0) + v
        return d

    def summary(self) -> dict[str, float]:
        seq = percentiles(np.concatenate(self.seq_latencies))
        server = histogram_percentiles({}, self.server_buckets)
        load = percentiles(np.concatenate(self.load_latencies))
        c = self.counts
        calls = c.get("calls", 0.0)
        answers = sum(c.get(f"{arm}_answer_ok", 0.0) for arm in ("champion", "candidate"))
        runs = {}
        for arm in ("champion", "candidate"):
            buckets = self.arm_runs.get(arm, {})
            if buckets and max(buckets.values()) > 0:
                runs[arm] = histogram_percentiles({}, buckets, ARM_QUANTILES)
        return {
            **{f"{arm}_run_{q}_ms": v for arm, qs in runs.items() for q, v in qs.items()},
            "client_p50_ms": seq["p50"],
            "client_p99_ms": seq["p99"],
            "server_p50_ms": server["p50"],
            "server_p99_ms": server["p99"],
            "rps": float(np.mean(self.rps)),
            "load_p50_ms": load["p50"],
            "load_p99_ms": load["p99"],
            "cpu_s_per_1000": self.cpu_s / calls * 1000 if calls else float("nan"),
            "calls": calls,
            "errors": self.errors,
            "shadow_scored": c.get("shadow_scored", 0.0),
            "shadow_skipped": c.get("shadow_skipped", 0.0),
            "shadow_error": c.get("shadow_error", 0.0),
            "candidate_answer_share": c.get("candidate_answer_ok", 0.0) / answers
            if answers
            else 0.0,
        }


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


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- the run -------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="server worker processes")
    parser.add_argument("--threads", type=int, default=2, help="RPC threads per worker")
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

    import model_factory  # tests/ is on sys.path since serving_latency's import

    from loopline.contracts.redis_layout import RedisLayout
    from loopline.featurerepo.loader import model_of
    from loopline.registry.directory import DirectoryRegistry

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    settings, topics, tag, work, store = bench_setup()
    figures = {mode: ModeFigures() for mode in MODES}
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        print("setup: features in Redis, champion and candidate (200 trees each) in a registry")
        write_features(store, RedisLayout(tag))
        registry = DirectoryRegistry(work / "registry")
        model = model_of(settings).name
        model_factory.publish(registry, model=model, n_trees=200, n_leaves=31, seed=0)
        candidate = model_factory.publish(
            registry, model=model, n_trees=200, n_leaves=31, seed=1, alias=None
        )
        extra = "" if args.auto_abort else "[rollout]\nauto_abort = false\n"
        config = write_config(
            work / "loopline.toml",
            settings,
            tag=tag,
            registry_root=registry.root,
            processes=args.processes,
            threads=args.threads,
            extra=extra,
        )
        requests = make_requests(5000)
        proc, port, metrics_port, _lines = start_server(config)
        try:
            print(f"server: {args.processes} processes x {args.threads} threads on :{port}")
            plans = Plans(config, registry, model, candidate.manifest.version, metrics_port)
            for i, mode in enumerate(phase_order(args.rounds)):
                plan_id = plans.set(mode)
                row = run_phase(
                    mode,
                    port=port,
                    metrics_port=metrics_port,
                    server_pid=proc.pid,
                    requests=requests,
                    args=args,
                    figures=figures[mode],
                )
                if plan_id and (plans.running() is None or plans.running().plan_id != plan_id):
                    ended = registry.rollout(model)
                    reason = f"{plan_id} {ended.state}: {ended.reason}"
                    figures[mode].aborted.append(reason)
                    print(f"  !! the plan ended during the phase: {reason}")
                rows.append((mode, row))
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
        finally:
            stop_server(proc)
    finally:
        remove_bench_data(store, tag, settings, topics)

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
        f"summary ({time.perf_counter() - t_start:.0f} s, {args.rounds} rounds, "
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
