"""What chaosb's scenarios share: a private run (topics, registry, config), its
history files, Loopline services as real processes to ``kill -9``, and polling.

Everything lives under the run's unique topic prefix and scratch directory
(see :class:`support.bench_run.BenchRun`), so the shared ``loopline up``
stack's own data is never touched; only processes this module started are
ever killed, by pid.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from loopline.demo.config import write_toml
from loopline.featurerepo.loader import builtin_example
from loopline.kafka.checked_producer import CheckedProducer
from loopline.registry.directory import DirectoryRegistry
from loopline.simulation.api import SimulationConfig, load_simulation
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc
from support.bench_run import BenchRun
from support.chaos_stack import Service
from support.clients import CLIENT_TIMEOUT_S, make_requests

# Margins so wide that every challenger passes the gate: the scenarios test what
# follows the gate (publish, placement), not the gate.
WIDE_GATE = {"gate_auc_margin": 1.0, "gate_log_loss_margin": 1.0, "gate_brier_margin": 1.0}


@dataclass
class ChaosRun:
    """A BenchRun plus the run's config file, registry and history files."""

    bench: BenchRun
    config: Path
    registry_root: Path
    history_events: Path
    history_outcomes: Path
    procs: list[Service] = field(default_factory=list)

    @staticmethod
    def start(
        *,
        history_events: int = 20_000,
        seed: int = 7,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> ChaosRun:
        bench = BenchRun.start()
        work = bench.work
        events = outcomes = work / "no-history"
        if history_events:
            events, outcomes = write_history(work, history_events, seed)
        s = bench.settings
        config: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": s.kafka.bootstrap_servers,
                "topic_prefix": s.kafka.topic_prefix,
                # Own consumer groups: never a rebalance of the shared stack's services.
                "consumer_group_prefix": f"{bench.tag}-",
            },
            "redis": {"host": s.redis.host, "port": s.redis.port},
            "streams": {"redis_key_prefix": bench.tag, "metrics_port": 0},
            "registry": {"path": work / "registry"},
            "trainer": {
                "state_dir": work / "trainer-state",
                "offline_store": work / "offline",
                "metrics_port": 0,
                "num_threads": 1,
                "schedule_s": 0,
                **WIDE_GATE,
            },
            "labels": {"maturity_s": 3600},
            "policy": {"metrics_port": 0, "schedule_s": 0},
        }
        for section, values in (sections or {}).items():
            config.setdefault(section, {}).update(values)
        path = work / "loopline.toml"
        write_toml(path, config)
        return ChaosRun(bench, path, work / "registry", events, outcomes)

    @property
    def work(self) -> Path:
        return self.bench.work

    def registry(self) -> DirectoryRegistry:
        return DirectoryRegistry(self.registry_root)

    def proc(self, name: str, *argv: str, env: dict[str, str] | None = None) -> Service:
        """A ``loopline`` command on this run's config, not started yet; log ``<name>.log``."""
        log = self.work / f"{name}.log"
        p = Service(["--config", str(self.config), *argv], env or {}, log, start=False)
        self.procs.append(p)
        return p

    def history_args(self) -> list[str]:
        return ["--bootstrap-events", str(self.history_events), "--bootstrap-outcomes",
                str(self.history_outcomes)]  # fmt: skip

    def train_champion(self, timeout_s: float = 300.0) -> None:
        """v1 on the history files, made champion by ``loopline train`` (the CLI)."""
        p = self.proc("bootstrap", "train", "--no-announce", *self.history_args()).start()
        assert p.proc is not None
        code = p.proc.wait(timeout_s)
        if code:
            raise RuntimeError(f"bootstrap training failed ({code}):\n{p.text()[-2000:]}")

    def close(self) -> None:
        for p in self.procs:
            p.stop(5)
        self.bench.remove()


def write_history(work: Path, n: int, seed: int) -> tuple[Path, Path]:
    """``n`` simulated fraud events of the last two hours and their outcomes, as JSONL."""
    example = builtin_example()
    if example is None:
        raise SystemExit("the chaos scenarios need examples/fraud (a source checkout)")
    config = SimulationConfig(
        seed=seed,
        start_ms=int(time.time() * 1000) - 2 * 3_600_000,
        duration_s=7200.0,
        max_events=n,
        rate=max(n / 7200.0 * 1.3, 1.0),
        params={"cards": 2_000, "merchants": 300, "fraud_rate": 0.02},
    )
    events, outcomes = work / "history-events.jsonl", work / "history-outcomes.jsonl"
    with events.open("w") as ev_out, outcomes.open("w") as out_out:
        for ev in load_simulation(example).simulate(config):
            ev_out.write(json.dumps(ev.record) + "\n")
            if ev.scored:
                outcome = {
                    "event_id": ev.record["event_id"],
                    "label": ev.label,
                    "event_time": ev.outcome_time_ms,
                }
                out_out.write(json.dumps(outcome) + "\n")
    return events, outcomes


def send(rig: ChaosRun, topic: str, payload: bytes, key: bytes) -> None:
    """One message, acknowledged by the broker."""
    producer = CheckedProducer({"bootstrap.servers": rig.bench.settings.kafka.bootstrap_servers})
    try:
        producer.send_and_wait(topic, payload, key)
    finally:
        producer.close()


def leftovers(root: Path) -> list[str]:
    """Files a crash may leave in a registry: staging folders, temporary files."""
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith(".") and p.name != ".lock"
    )


@dataclass
class Call:
    at: float  # monotonic seconds
    ok: bool
    version: str
    latency_s: float
    degraded: bool = False


class Pinger:
    """Predict calls at a steady rate on a background thread, every answer kept."""

    def __init__(self, port: int, rate_per_s: float = 50.0) -> None:
        self.port = port
        self.every_s = 1.0 / rate_per_s
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def stop(self) -> list[Call]:
        self._stop.set()
        self._thread.join(10)
        return self.calls

    def versions_since(self, at: float) -> set[str]:
        return {c.version for c in self.calls if c.at >= at and c.ok}

    def failed(self) -> int:
        return sum(not c.ok for c in self.calls)

    def _run(self) -> None:
        requests = make_requests(500, seed=3)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            i = 0
            while not self._stop.is_set():
                t = time.monotonic()
                request = pb.PredictRequest.FromString(requests[i % len(requests)])
                try:
                    reply = stub.Predict(request, timeout=CLIENT_TIMEOUT_S)
                    call = Call(t, True, reply.model_version, time.monotonic() - t, reply.degraded)
                except grpc.RpcError:
                    call = Call(t, False, "", time.monotonic() - t)
                self.calls.append(call)
                i += 1
                self._stop.wait(max(0.0, self.every_s - (time.monotonic() - t)))
