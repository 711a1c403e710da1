"""The rollout benchmark's figures: serving's rollout counters and per-arm model-run
histograms from /metrics, the server's CPU from /proc, pooled per mode."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from support.clients import percentiles
from support.server import histogram_percentiles

CLK_TCK = os.sysconf("SC_CLK_TCK")
# The rollout policy compares the arms' model-run p90 (rollout.latency_quantile).
ARM_QUANTILES = (("p50", 0.5), ("p90", 0.9))


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


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


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
