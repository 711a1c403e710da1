"""The Grafana dashboard against a real Prometheus scraping a running loop.

``loopline up --monitoring``'s Prometheus (``Monitoring``, 1 s scrapes) scrapes
the loop's components on their metrics ports: serving (in process, a canary
rollout under load), the features and drift flows (real processes), the retrain
policy, the trainer and the rollout watcher (in process, each with its own
metrics endpoint). Every query of ``deploy/grafana/loopline.json`` then goes
through Prometheus's HTTP API and must return data.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import model_factory
import pytest
import redis
from drift_inputs import FAST, predictions
from features_support import event_record, events, features_flow
from flow_process import FlowProcess
from kafka_support import kafka_env, produce_records
from predict_load import PredictLoad
from prometheus_client import CollectorRegistry, start_http_server
from rollout_support import labeled_examples
from serving_support import card_values, merchant_values, running_server, write_features

from loopline.contracts.schemas import encode
from loopline.contracts.settings import DriftSettings, Settings
from loopline.contracts.topics import Topics
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.rollout.policy import RolloutPolicy
from loopline.stack import delete_topics, ensure_topics, free_port
from loopline.stack.dashboard import DashboardQuery, load, prometheus_expr, queries
from loopline.stack.monitoring import Monitoring
from loopline.trainer.data import DataRequest, load_training_set
from loopline.trainer.kafka_io import KafkaAnnouncer
from loopline.trainer.pipeline import Trainer
from loopline.trainer.policy.service import RetrainPolicyLoop
from loopline.trainer.rollout.label_source import kafka_label_sources
from loopline.trainer.rollout.watch_metrics import RolloutMetrics
from loopline.trainer.rollout.watcher import RolloutWatcher
from loopline.trainer.service import RetrainService
from loopline.trainer.telemetry import Telemetry
from loopline.v1 import inference_pb2 as pb

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "loopline.json"
# What $__rate_interval becomes: several 1 s scrapes.
RATE_WINDOW = "10s"
DEADLINE_S = 120.0
CARDS = [f"card-{i}" for i in range(20)]
# Annotations mark events; these two have none in this run (nothing is decided or fires).
EVENTLESS_ANNOTATIONS = frozenset({"annotation: Rollout decisions", "annotation: Firing alerts"})


class Traffic(PredictLoad):
    """Known cards (fresh features), an unknown card (defaulted features) and, now and
    then, a request without its merchant (INVALID_ARGUMENT)."""

    def request(self, client: int, call: int) -> pb.PredictRequest:
        i = client * 1000 + call
        entities = {"card_id": CARDS[i % len(CARDS)], "merchant_id": "m1"}
        if i % 7 == 0:
            entities["card_id"] = "card-unknown"
        if i % 11 == 0:
            del entities["merchant_id"]
        return pb.PredictRequest(entities=entities, fields={"amount": 42.0}, event_id=f"e{i}")

    def record(self, request: pb.PredictRequest, response: pb.PredictResponse) -> None:
        pass


@dataclass(frozen=True)
class LiveLoop:
    prometheus: str  # http://host:port
    settings: Settings


def _settings(base: Settings, topics: Topics, key_prefix: str, tmp: Path) -> Settings:
    kafka = replace(
        base.kafka, topic_prefix=topics.prefix, consumer_group_prefix=f"{topics.prefix}group-"
    )
    return replace(
        base,
        kafka=kafka,
        registry=replace(base.registry, path=tmp / "registry"),
        stack=replace(
            base.stack,
            state_dir=tmp / "state",
            prometheus_port=free_port(),
            scrape_interval_s=1.0,
        ),
        serving=replace(
            base.serving,
            port=0,
            metrics_port=free_port(),
            registry_poll_s=0.3,
            feature_timeout_ms=1000.0,
            default_deadline_ms=2000.0,
        ),
        streams=replace(
            base.streams,
            redis_key_prefix=key_prefix,
            metrics_port=free_port(),
            recovery_dir=tmp / "recovery",
        ),
        drift=replace(FAST, metrics_port=free_port()),
        # Labels flow not run here: no target for it.
        labels=replace(base.labels, metrics_port=0),
        policy=replace(
            base.policy,
            min_new_rows=0,
            min_interval_s=0.0,
            schedule_s=0.0,
            tick_s=0.2,
            metrics_port=free_port(),
        ),
        trainer=replace(
            base.trainer,
            schedule_s=0.0,
            state_dir=tmp / "trainer",
            offline_store=tmp / "offline",
            metrics_port=free_port(),
        ),
        # Never decides here: the plan keeps running while the panels are read.
        rollout=replace(
            base.rollout, min_labels=1_000_000, decide_every_s=0.3, metrics_port=free_port()
        ),
    )


def _in_thread(cleanup: contextlib.ExitStack, name: str, run: Callable[[threading.Event], Any]):
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), name=name, daemon=True)
    thread.start()

    def join() -> None:
        stop.set()
        thread.join(30)

    cleanup.callback(join)


def _drift_flow(settings: Settings, log: Path) -> FlowProcess:
    """``run drift`` with the test's drift settings (those apart from the defaults)."""
    d, defaults = settings.drift, DriftSettings()
    env = {
        **kafka_env(settings),
        "LOOPLINE_STREAMS__START_FROM": "beginning",
        "LOOPLINE_STREAMS__RECOVERY_DIR": str(settings.streams.recovery_dir),
        **{
            f"LOOPLINE_DRIFT__{f.name.upper()}": str(getattr(d, f.name))
            for f in fields(d)
            if getattr(d, f.name) != getattr(defaults, f.name)
        },
    }
    return FlowProcess("drift", env, log, "--no-recovery")


def _serve_metrics(registry: CollectorRegistry, port: int) -> None:
    """What each component's `loopline run` does with its metrics port."""
    start_http_server(port, addr="127.0.0.1", registry=registry)


@pytest.fixture(scope="module")
def live(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLoop]:
    tmp = tmp_path_factory.mktemp("dashboard")
    run = f"t{uuid.uuid4().hex[:8]}"
    topics, key_prefix = Topics(prefix=f"{run}."), run
    settings = _settings(stack_settings, topics, key_prefix, tmp)
    client = redis.Redis(host=settings.redis.host, port=settings.redis.port, db=settings.redis.db)
    with contextlib.ExitStack() as cleanup:
        ensure_topics(stack_settings, topics)
        cleanup.callback(delete_topics, stack_settings, topics.all(), timeout_s=10)
        cleanup.callback(_delete_keys, client, key_prefix)
        # The two flows start first: a process takes longest to come up.
        feats = features_flow(
            settings, key_prefix, tmp / "features.log", metrics_port=settings.streams.metrics_port
        )
        cleanup.callback(feats.stop)
        drift = _drift_flow(settings, tmp / "drift.log")
        cleanup.callback(drift.stop)
        monitoring = Monitoring(settings)
        cleanup.callback(monitoring.down)
        monitoring.up()

        reg = _canary_registry(settings)
        # One producer for every input: events (and one malformed, dead-lettered), then
        # predictions whose one feature shifts (a critical data drift alarm, which the
        # policy turns into a retrain), then labels for both arms of the canary.
        t_ms = int(time.time() * 1000)
        arm_labels = labeled_examples("fraud", "1", 90, t_ms, 0.3)
        arm_labels += labeled_examples("fraud", "2", 90, t_ms, 0.2)
        produce_records(
            settings,
            [
                *(event_record(topics.events, e) for e in events(300, seed=5)),
                (topics.events, b"k", b"not json"),
                *((topics.predictions, b"fraud", encode(x)) for x in predictions(1500, 800)),
                *((topics.labeled, b"fraud", v) for v in arm_labels),
            ],
        )

        now = time.time()
        for card in CARDS:
            write_features(client, key_prefix, "card", card, values=card_values(), t=now)
        write_features(client, key_prefix, "merchant", "m1", values=merchant_values(), t=now)
        server = cleanup.enter_context(running_server(settings))
        _serve_metrics(server.metrics.registry, settings.serving.metrics_port)
        cleanup.enter_context(Traffic(server.port, clients=2))
        _start_policy(cleanup, settings)
        _start_trainer(cleanup, settings, reg, topics)
        _start_rollout_watcher(cleanup, settings, reg)

        yield LiveLoop(f"http://{monitoring.prometheus.address}", settings)
        feats.alive()
        drift.alive()


def _delete_keys(client: redis.Redis, key_prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _canary_registry(settings: Settings) -> DirectoryRegistry:
    """v1 champion, v2 its canary on half the cards."""
    reg = DirectoryRegistry(settings.registry.path)
    # Small models: what they score does not matter here, only that both arms run.
    model_factory.publish(reg, seed=0, n_trees=3)
    model_factory.publish(reg, seed=4, n_trees=3, alias=None)
    plan = RolloutPlan.start("fraud", candidate="2", champion="1", mode="canary", canary_share=0.5)
    reg.start_rollout(plan)
    return reg


def _start_policy(cleanup: contextlib.ExitStack, settings: Settings) -> None:
    registry = CollectorRegistry()
    _serve_metrics(registry, settings.policy.metrics_port)
    loop = RetrainPolicyLoop(settings, registry=registry)
    _in_thread(cleanup, "policy", loop.run)


def _start_trainer(
    cleanup: contextlib.ExitStack, settings: Settings, reg: DirectoryRegistry, topics: Topics
) -> None:
    telemetry = Telemetry.start(settings.trainer.metrics_port)
    announcer = KafkaAnnouncer(settings.kafka, topics.model_updates)
    cleanup.callback(announcer.close)
    # The offline store is empty and bootstrapping is off: the requested training fails
    # quickly, which the trainer counts like any outcome.
    request = DataRequest(fallback_to_bootstrap=False)
    service = RetrainService(
        settings,
        reg,
        Trainer(settings.trainer, reg, announcer=announcer),
        lambda: load_training_set(settings, request),
        on_handled=telemetry.record,
    )
    _in_thread(cleanup, "trainer", service.run)


def _start_rollout_watcher(
    cleanup: contextlib.ExitStack, settings: Settings, reg: DirectoryRegistry
) -> None:
    metrics = RolloutMetrics(CollectorRegistry())
    _serve_metrics(metrics.registry, settings.rollout.metrics_port)
    watcher = RolloutWatcher(
        reg,
        "fraud",
        open_source=kafka_label_sources(settings),
        new_policy=lambda: RolloutPolicy.from_settings(settings.rollout),
        announcer=None,
        metrics=metrics,
        decide_every_s=settings.rollout.decide_every_s,
    )
    cleanup.callback(watcher.close)
    _in_thread(cleanup, "rollout-watcher", watcher.run)


def query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.loads(resp.read().decode()))
    except urllib.error.HTTPError as e:  # a bad query: 400 with Prometheus's error
        return dict(json.loads(e.read().decode()))


def _results(live: LiveLoop, wanted: list[DashboardQuery]) -> dict[DashboardQuery, Any]:
    """Each query's answer, asked again until all have data or the deadline passes."""
    answers: dict[DashboardQuery, Any] = {}
    deadline = time.monotonic() + DEADLINE_S
    pending = list(wanted)
    while pending and time.monotonic() < deadline:
        for q in pending:
            answers[q] = query(live.prometheus, prometheus_expr(q.expr, RATE_WINDOW))
        pending = [q for q in pending if not _has_data(answers[q])]
        if pending:
            time.sleep(1.0)
    return answers


def _has_data(answer: dict[str, Any]) -> bool:
    return answer.get("status") == "success" and bool(answer["data"]["result"])


def test_every_panel_query_returns_data(live: LiveLoop) -> None:
    board = load(DASHBOARD)
    wanted = [q for q in queries(board) if q.panel not in EVENTLESS_ANNOTATIONS]
    answers = _results(live, wanted)
    empty = [
        f"{q.panel} [{q.ref}]: {q.expr} -> {answers[q].get('error') or 'no data'}"
        for q in wanted
        if not _has_data(answers[q])
    ]
    assert not empty, "queries without data:\n" + "\n".join(empty)
    # Not just present: the loop's own figures show through.
    served = {
        (r["metric"].get("arm"), r["metric"].get("path"))
        for q in wanted
        if q.panel == "Model runs per rollout arm"
        for r in answers[q]["data"]["result"]
    }
    assert {("champion", "answer"), ("candidate", "answer")} <= served


def test_eventless_annotations_evaluate(live: LiveLoop) -> None:
    for q in queries(load(DASHBOARD)):
        if q.panel in EVENTLESS_ANNOTATIONS:
            answer = query(live.prometheus, prometheus_expr(q.expr, RATE_WINDOW))
            assert answer["status"] == "success", (q.panel, answer)


def test_prometheus_runs_the_shipped_rules_on_every_configured_target(live: LiveLoop) -> None:
    rules = query(live.prometheus, "count(ALERTS) or vector(0)")
    assert rules["status"] == "success"
    with urllib.request.urlopen(f"{live.prometheus}/api/v1/rules", timeout=10) as resp:
        groups = {g["name"] for g in json.loads(resp.read())["data"]["groups"]}
    assert {"loopline-serving", "loopline-drift", "loopline-rollout"} <= groups
    up = query(live.prometheus, 'up{job=~"loopline-.*"}')["data"]["result"]
    assert {r["metric"]["job"]: r["value"][1] for r in up} == {
        job: "1"
        for job in (
            "loopline-serving",
            "loopline-features",
            "loopline-drift",
            "loopline-retrain-policy",
            "loopline-trainer",
            "loopline-rollout",
        )
    }
