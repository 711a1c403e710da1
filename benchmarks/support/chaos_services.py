"""Loopline's own processes on a scenario's private stack: the features flow and serving.

A scenario starts them with :func:`features_flow` and :func:`serving` (real
``loopline run features`` / ``run serve`` processes, killable with SIGKILL),
reads their Prometheus endpoints with :func:`metric_total`, and serves a
model trained once per benchmark process by the package's trainer
(:func:`champion_registry`).
"""

from __future__ import annotations

import hashlib
import random
import re
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline import featurecore, trainer
from loopline.config.loader import load_settings
from loopline.demo.config import write_toml
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import builtin_example
from loopline.registry.directory import DirectoryRegistry
from loopline.stack.ports import free_port
from loopline.v1 import inference_pb2 as pb
from support.chaos_load import (
    N_CARDS,
    N_MERCHANTS,
    EventStream,
    PredictCounts,
    PredictLoop,
    fraud_event,
)
from support.chaos_readback import expected_features, feature_mismatches, mismatched
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_stack import PrivateStack, Service, wait_for, wait_port
from support.flow_runs import stored_values
from support.models import TrainedModels
from support.server import scrape

_trained: dict[Path, TrainedModels] = {}
# What the server prints once every worker listens.
_READY = re.compile(r"^serving \S+ on ", re.M)
# A flow snapshot every few seconds: a crash replays little, the flow still runs at speed.
SNAPSHOT_S = 5


def champion_registry(root: Path) -> Path:
    """A registry at ``root`` whose champion is the benchmarks' fraud model.

    Trained by the package's trainer once per version of the trainer and the
    example (kept under the temp dir, :func:`model_cache`), then copied in.
    """
    cache = model_cache()
    if cache not in _trained:
        models = TrainedModels(load_settings(), cache)
        known = models.scratch.versions("fraud")
        if known:
            models.adopt(1, known[-1])
        _trained[cache] = models
    _trained[cache].publish(DirectoryRegistry(root), seed=1)
    return root


def model_cache() -> Path:
    """Where the trained model is kept: named by a digest of the code that trains it."""
    digest = hashlib.sha256()
    roots = [Path(trainer.__file__).parent, Path(featurecore.__file__).parent, builtin_example()]
    for root in roots:
        assert root is not None
        for path in sorted(root.rglob("*.py")):
            digest.update(path.read_bytes())
    return Path(tempfile.gettempdir()) / f"loopline-chaos-model-{digest.hexdigest()[:12]}"


def features_flow(stack: PrivateStack, name: str = "features", *args: str) -> tuple[Service, int]:
    """``loopline run features`` on ``stack`` (recovery on); the service and its metrics port."""
    port = free_port()
    env = {
        **stack.env(),
        "LOOPLINE_STREAMS__METRICS_PORT": str(port),
        "LOOPLINE_STREAMS__FEATURES_SNAPSHOT_INTERVAL_S": str(SNAPSHOT_S),
        "LOOPLINE_STREAMS__SHARDS": "16",
    }
    recovery = ["--recovery-dir", str(stack.work / f"recovery-{name}")]
    flow = Service(
        ["run", "features", *recovery, *args],
        env,
        stack.work / f"{name}.log",
        module="loopline.streams",
    )
    stack.services.append(flow)
    return flow, port


def serving(
    stack: PrivateStack,
    registry: Path,
    *,
    replicas: int = 1,
    name: str = "serve",
    overrides: dict[str, dict[str, Any]] | None = None,
    port: int | None = None,
) -> tuple[Service, int, int]:
    """``loopline run serve`` on ``stack``: the service, its gRPC and metrics ports
    (returns once the gRPC port accepts connections)."""
    port = port or free_port()
    metrics = free_port()
    s = stack.settings
    sections: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": s.kafka.bootstrap_servers,
            "topic_prefix": s.kafka.topic_prefix,
        },
        "redis": {"host": s.redis.host, "port": s.redis.port},
        "streams": {"redis_key_prefix": stack.key_prefix},
        "registry": {"path": registry},
        "serving": {
            "port": port,
            "metrics_port": metrics,
            "processes": replicas,
            "threads": 4,
            # Generous: the calls share two cores with a broker, Redis and the flow.
            "default_deadline_ms": 200.0,
            "feature_timeout_ms": 20.0,
        },
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    config = stack.work / f"{name}.toml"
    write_toml(config, sections)
    service = Service(
        ["--config", str(config)], {}, stack.work / f"{name}.log", module="loopline.serving"
    )
    stack.services.append(service)
    if wait_port(port, 120) is None:
        raise SystemExit(f"serving did not start:\n{service.tail()}")
    # The port opens before every worker has loaded the model: wait for the ready line.
    if wait_for(lambda: _READY.search(service.tail(50_000)), 120) is None:
        raise SystemExit(f"serving did not become ready:\n{service.tail()}")
    return service, port, metrics


def metric_total(port: int, name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples (matching ``labels``) at a /metrics endpoint; None
    while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def wait_metric_rises(port: int, name: str, above: float, timeout_s: float) -> float | None:
    """Seconds until ``name`` at ``port`` exceeds ``above`` (None: it did not)."""
    return wait_for(lambda: (metric_total(port, name) or 0.0) > above, timeout_s, 0.1)


def features_caught_up(
    stack: PrivateStack, fs: FeatureSet, events: list[dict[str, Any]], timeout_s: float
) -> tuple[dict[str, int], float | None]:
    """Wait until Redis holds exactly the offline replay of ``events``; the last
    comparison (keys missing, extra, different) and the seconds it took (None: never)."""
    expected = expected_features(fs, events, stack.key_prefix)
    store = stack.store()
    last: dict[str, int] = {}

    def equal() -> bool:
        nonlocal last
        last = feature_mismatches(expected, stored_values(store, stack.key_prefix))
        return not mismatched(last)

    took = wait_for(equal, timeout_s, 1.0)
    return {**last, "expected_keys": len(expected)}, None if took is None else round(took, 1)


def static_features(stack: PrivateStack, fs: FeatureSet, rng: random.Random, now_ms: int) -> None:
    """Fixed feature values in the stack's Redis: the offline replay of 6,000 events of
    the last 4 minutes (for scenarios that need answers that do not move)."""
    history = [fraud_event(rng, i, now_ms - 240_000 + i * 40, "hist") for i in range(6000)]
    store = stack.store()
    prefix = stack.key_prefix.encode()
    for key, value in expected_features(fs, history, stack.key_prefix).items():
        store.set(prefix + key, value)


def request_pool(rng: random.Random, n: int, event_time_ms: int) -> list[pb.PredictRequest]:
    """``n`` Predict requests at one event time: each has exactly one right score."""
    return [
        pb.PredictRequest(
            entities={
                "card_id": f"c{rng.randrange(N_CARDS)}",
                "merchant_id": f"m{rng.randrange(N_MERCHANTS)}",
            },
            fields={"amount": round(rng.uniform(1, 500), 2)},
            event_time_ms=event_time_ms,
        )
        for _ in range(n)
    ]


def server_calls_over(metrics_port: int, seconds: float) -> tuple[int, int]:
    """Calls the server took longer than ``seconds`` over, and all its calls, from its
    own ``total`` stage histogram (a starved client's stalls do not count). Read at the
    first bucket bound at or past ``seconds``, so the count errs on the low side."""
    buckets = scrape(metrics_port)["buckets"]
    if not buckets:
        return 0, 0
    total = int(buckets[float("inf")])
    bound = min(le for le in buckets if le >= seconds)
    return total - int(buckets[bound]), total


RECORDS = "loopline_features_records_total"


@dataclass
class Loop:
    """The features flow and serving on a private stack, under events and Predict load."""

    flow: Service
    flow_port: int
    serve: Service
    port: int
    metrics_port: int
    events: EventStream
    predict: PredictLoop


def start_loop(stack: PrivateStack, options: ChaosOptions, deadline_s: float) -> Loop:
    """Start the flow, serving (the cached champion), events with outcomes and 100
    Predict calls/s; returns once the flow reads events (a fault comes after that: a
    flow still starting is another scenario)."""
    registry = champion_registry(stack.work / "registry")
    flow, flow_port = features_flow(stack)
    serve, port, metrics_port = serving(stack, registry)
    events = EventStream(
        stack.settings.kafka,
        stack.topics.events,
        rate=options.events_per_s,
        seed=options.seed,
        outcomes_topic=stack.topics.outcomes,
    ).start()
    predict = PredictLoop(
        f"127.0.0.1:{port}", rate=100, deadline_s=deadline_s, seed=options.seed
    ).start()
    if wait_metric_rises(flow_port, RECORDS, 0.0, 300) is None:
        predict.stop()
        events.stop(flush_s=10)
        raise SystemExit(f"the features flow never read an event:\n{flow.tail()}")
    return Loop(flow, flow_port, serve, port, metrics_port, events, predict)


def fixed_serving(
    stack: PrivateStack,
    fs: FeatureSet,
    options: ChaosOptions,
    *,
    replicas: int,
    pool: int,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[Service, int, int, list[pb.PredictRequest]]:
    """Serving on fixed features (:func:`static_features`) and a pool of requests each
    with one right answer: the service, its ports and the pool."""
    rng = random.Random(options.seed)
    now_ms = int(time.time() * 1000)
    static_features(stack, fs, rng, now_ms)
    requests = request_pool(rng, pool, now_ms + 1000)
    registry = champion_registry(stack.work / "registry")
    serve, port, metrics_port = serving(stack, registry, replicas=replicas, overrides=overrides)
    return serve, port, metrics_port, requests


def loop_result(
    name: str,
    events: EventStream,
    calls: PredictCounts,
    *,
    lost: int,
    recovery_s: float | None,
    checks: dict[str, bool],
    details: dict[str, Any],
) -> ScenarioResult:
    """The JSON line of a scenario that ran :func:`start_loop`'s load."""
    return ScenarioResult(
        scenario=name,
        events_sent=events.events_sent,
        events_acked=events.counts.acked,
        events_lost=lost,
        predict_calls=calls.calls,
        predict_failed=calls.failed,
        predict_degraded=calls.degraded,
        recovery_s=None if recovery_s is None else round(recovery_s, 1),
        invariant_ok=all(checks.values()),
        details={"checks": checks, **details},
    )
