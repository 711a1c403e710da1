"""``loopline demo``: bring the loop up, drive it, watch it close, report.

Phases: the stack; a replayed history (events and outcomes) to Kafka; the
features flow; a bootstrap model; the services (serve, labels, drift,
retrain policy, trainer, and with ``--publish-as canary|shadow`` the rollout
watcher); live traffic with a drift injected midway; a grace period for the
loop to close; the report. Exit code 0 only when a drift was detected, a new
model version was trained, published and served (and, with a rollout,
promoted by the watcher), and no Predict call failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from loopline.config.grpc import GrpcClient, grpc_client
from loopline.config.kafka import admin_config, producer_config
from loopline.contracts import metric_names as mn
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.demo.config import DemoConfig, prepare
from loopline.demo.observe import MetricsScraper, TopicWatcher, scrape, total
from loopline.demo.requests import RequestShape
from loopline.demo.run import DemoRun
from loopline.demo.services import Service, ServiceError
from loopline.demo.traffic import Driver
from loopline.featurerepo.loader import model_of, project_of, read_repo_config
from loopline.kafka.checked_producer import CheckedProducer
from loopline.registry.directory import DirectoryRegistry
from loopline.simulation.api import SimEvent, SimulationConfig, load_simulation
from loopline.simulation.timeline import Message, Routes

if TYPE_CHECKING:
    from loopline.stack import Stack
    from loopline.stack.secure_material import SecureMaterial

Say = Callable[[str], None]


def _simulation(settings: Settings, demo: DemoConfig, start_ms: int) -> Iterator[SimEvent]:
    """The repo's simulator over history, live phase and grace, drift at its planned time."""
    project = project_of(settings)
    root = project.root
    if root is None:  # a project built in memory: nothing on disk to simulate with
        raise ServiceError("the demo needs a feature repo on disk (--repo PATH)")
    sim = load_simulation(root, read_repo_config(root).simulator)
    cfg = SimulationConfig(
        seed=demo.seed,
        start_ms=start_ms,
        duration_s=demo.history_s + demo.live_s + demo.grace_s,
        rate=demo.rate,
        outcome_delay_s=demo.outcome_delay_s,
        drift_at_s=demo.drift_offset_s,
        # A flat rate: minutes of traffic should not depend on the hour the demo runs.
        daily_rhythm=False,
        params={**sim.demo_params, **demo.params},
    )
    return sim.simulate(cfg)


class Demo:
    """One demo run, phase by phase."""

    def __init__(self, base: Settings, demo: DemoConfig, say: Say) -> None:
        self.demo = demo
        self.say = say
        settings, run_dir, self.config_path = prepare(base, demo, base.stack.state_dir)
        self.run = DemoRun(demo, settings, run_dir, started_wall_s=time.time())
        self.topics = Topics(settings.kafka.topic_prefix)
        project = project_of(settings)
        model = project.model(settings.project.model)
        self.run.task = model.task
        self.routes = Routes.of(project, model, self.topics)
        self.shape = RequestShape.of(project, model)
        self.services: dict[str, Service] = {}
        self.stop = threading.Event()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # The services read the run's TOML only: environment overrides were
        # already folded into it.
        self.env = {k: v for k, v in self.env.items() if not k.startswith("LOOPLINE_")}
        # Set on the secure stack: each service then runs with its own credentials.
        self.material: SecureMaterial | None = None

    # -- phases -------------------------------------------------------------------
    def history(self) -> Iterator[SimEvent]:
        """Produce the history; return the live part of the stream, unsent."""
        d = self.demo
        now_ms = int(time.time() * 1000)
        start_ms = now_ms - int(d.history_s * 1000)
        stream = iter(_simulation(self.run.settings, d, start_ms))
        producer = CheckedProducer(producer_config(self.run.settings.kafka, **{"linger.ms": 20}))
        pending: list[Message] = []
        first_live = None
        for ev in stream:
            if ev.time_ms >= now_ms:
                first_live = ev
                break
            m = self.routes.event(ev)
            producer.send(m.topic, m.value, m.key)
            self.run.history_events += 1
            if not ev.scored:
                continue
            out = self.routes.outcome(ev)
            if out.time_ms < now_ms:
                producer.send(out.topic, out.value, out.key)
                self.run.history_outcomes += 1
            else:
                pending.append(out)
        producer.flush()
        # Outcomes still due at the end of history are sent (as old news) now.
        for out in pending:
            producer.send(out.topic, out.value, out.key)
            self.run.history_outcomes += 1
        producer.flush()
        self.say(
            f"history: {self.run.history_events:,} events and "
            f"{self.run.history_outcomes:,} outcomes over {d.history_s / 60:.0f} min sent to Kafka"
        )

        def live() -> Iterator[SimEvent]:
            # Live event times are re-stamped onto the wall clock, keeping the
            # simulator's spacing: the history ends when the live phase begins.
            offset: int | None = None
            first = [first_live] if first_live is not None else []
            for ev in _chain(first, stream):
                if offset is None:
                    offset = int(time.time() * 1000) - ev.time_ms
                    self.run.live_start_wall_s = time.time()
                    self.run.drift_wall_s = (start_ms + d.drift_offset_s * 1000 + offset) / 1000
                yield self.shape.restamp(ev, offset)

        return live()

    def secure_services(self, stack: Stack) -> None:
        """On the secure stack: each service's Kafka users and ACLs for this run's topics,
        Redis rights on its key prefix, and its own credentials in its environment."""
        from loopline.stack.kafka_acls import apply_acls
        from loopline.stack.secure import material_of

        s = self.run.settings
        material = material_of(s)
        apply_acls(s, material, project_of(s))
        stack.redis.grant_key_prefix(s.streams.redis_key_prefix)
        self.material = material
        self.say("secure: every service runs with its own Kafka and Redis login")

    def service_env(self, name: str) -> dict[str, str]:
        """The environment of service ``name`` (its own principal on the secure stack)."""
        if self.material is None:
            return self.env
        return {**self.env, **self.material.env(name)}

    def start_service(self, name: str, argv: list[str], metrics_port: int | None) -> Service:
        url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
        svc = Service(
            name,
            ["--config", str(self.config_path), *argv],
            self.run.run_dir / "logs" / f"{name}.log",
            url,
        )
        svc.start(self.service_env(name))
        self.services[name] = svc
        return svc

    def bootstrap(self) -> None:
        started = time.monotonic()
        self.say("bootstrap: training the first model on the replayed history ...")
        log = self.run.run_dir / "logs" / "bootstrap-train.log"
        with open(log, "wb") as out:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "loopline.cli",
                    "--config",
                    str(self.config_path),
                    "train",
                    "--bootstrap-events",
                    "topic",
                    "--force",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.service_env("trainer"),
                timeout=300,
                check=False,
            )
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise ServiceError(f"bootstrap training failed (exit {done.returncode}):\n{tail}")
        self.run.bootstrap_s = time.monotonic() - started
        self.say(f"bootstrap: champion published in {self.run.bootstrap_s:.1f} s")

    def driver(self, client: GrpcClient, producer: CheckedProducer) -> Driver:
        """Live traffic on this run's topics, in its model's request shape, into its stats."""
        return Driver(
            client=client,
            producer=producer,
            routes=self.routes,
            shape=self.shape,
            stats=self.run.stats,
        )

    def close(self) -> None:
        self.stop.set()
        for svc in reversed(list(self.services.values())):
            svc.stop()


def run_demo(base: Settings, demo: DemoConfig, say: Say) -> int:
    """The whole demo; returns the exit code (0: the loop closed)."""
    from loopline.demo.console import LiveView
    from loopline.demo.report import build_report
    from loopline.stack import Stack

    t0 = time.monotonic()
    plain_say = say

    def say(message: str) -> None:
        plain_say(f"[{time.monotonic() - t0:5.0f} s] {message}")

    stack = Stack(base, progress=say)
    status = stack.up()
    started = [c for c in (status.kafka, status.redis) if c.started_now]
    say(status.describe())
    d = Demo(base, demo, say)
    run, s = d.run, d.run.settings
    say(f"run {run.run_dir.name}: state in {run.run_dir}")
    from loopline.stack import ensure_topics

    ensure_topics(s, d.topics)
    if s.stack.secure:
        d.secure_services(stack)
    view: LiveView | None = None
    try:
        live = d.history()
        d.start_service("features", ["run", "features"], s.streams.metrics_port)
        d.bootstrap()
        d.start_service("serve", ["run", "serve"], s.serving.metrics_port)
        d.start_service("labels", ["run", "labels"], _labels_port(s))
        d.start_service("drift", ["run", "drift"], s.drift.metrics_port)
        d.start_service("policy", ["run", "policy"], s.policy.metrics_port)
        d.start_service("trainer", ["run", "trainer"], s.trainer.metrics_port)
        if demo.rollout:
            d.start_service("rollout", ["run", "rollout"], s.rollout.metrics_port)
        for svc in d.services.values():
            svc.wait_ready(120)
        client = grpc_client(s.serving)
        _wait_serving(client, d.services["serve"], 120)
        _wait_features_caught_up(d.services["features"], run.history_events, say, 180)
        say("services up: " + ", ".join(d.services))
        run.scraper = MetricsScraper(
            {n: svc.metrics_url for n, svc in d.services.items() if svc.metrics_url}
        )
        run.watcher = TopicWatcher(
            admin_config(s.kafka),
            d.topics.drift,
            d.topics.retrain,
            d.topics.model_updates,
        )
        run.scraper.mark_baseline()
        run.scraper.start()
        run.watcher.start()
        producer = CheckedProducer(producer_config(s.kafka))
        driver = d.driver(client, producer)
        view = LiveView(run, d.services, demo.console)
        view.start()
        driver.run(_until_closed(live, run, demo), d.stop, on_tick=view.line)
        run.live_end_wall_s = time.time()
        driver.drain_outcomes(int((time.time() + demo.outcome_delay_s * 1.6) * 1000), d.stop)
        producer.flush()
        driver.close()
        d.stop.wait(3.0)  # let the labels flow and scrapers see the last of it
    except KeyboardInterrupt:
        run.problems.append("interrupted")
    finally:
        if view is not None:
            view.stop()
        if run.scraper is not None:
            run.scraper.stop()
        if run.watcher is not None:
            run.watcher.stop()
        for name, svc in d.services.items():
            if not svc.alive():
                run.problems.append(f"{name} died: {svc.tail(5)}")
        d.close()
    # The report reads the labeled topic: build it before the stack goes down.
    try:
        report = build_report(run, d.topics)
    finally:
        if not demo.keep and started:
            say("stopping the stack the demo started (--keep leaves it running)")
            stack.down()
    plain_say(report.text)
    plain_say(f"demo took {time.monotonic() - t0:.0f} s")
    return 0 if report.loop_closed else 1


def _wait_serving(client: GrpcClient, serve: Service, timeout_s: float) -> None:
    """Wait for gRPC health SERVING: metrics can answer before every worker listens."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with client.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not serve.alive():
                raise ServiceError(f"serve exited early:\n{serve.tail()}")
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1, metadata=client.metadata
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as e:  # not listening yet: poll again
                last = f"{e.code().name}: {e.details()}"
            time.sleep(0.2)
    raise ServiceError(f"serve not SERVING within {timeout_s:.0f} s ({last}):\n{serve.tail()}")


def _wait_features_caught_up(features: Service, events: int, say: Say, timeout_s: float) -> None:
    """Wait until the features flow has read the history and has no lag left.

    Live requests sent earlier would find no features for entities the flow
    has not reached yet: defaults served, a false prediction-drift alarm, and
    a labeled log whose first minutes hold vectors the entities never had.
    """
    assert features.metrics_url is not None
    deadline = time.monotonic() + timeout_s
    read = lag = -1.0
    while time.monotonic() < deadline:
        if not features.alive():
            raise ServiceError(f"features exited early:\n{features.tail()}")
        try:
            samples = scrape(features.metrics_url)
        except OSError:  # between restarts of its endpoint: ask again
            samples = {}
        read = total(samples, mn.FEATURES_RECORDS.series)
        lag = total(samples, mn.FEATURES_CONSUMER_LAG.series)
        if samples and read >= events and lag == 0:
            say(f"features: the flow has read all {events:,} history events")
            return
        time.sleep(0.5)
    say(
        f"features: still behind after {timeout_s:.0f} s ({read:,.0f} of {events:,} history "
        f"events read, lag {lag:,.0f}); starting live traffic anyway"
    )


def _labels_port(s: Settings) -> int | None:
    labels = getattr(s, "labels", None)
    return getattr(labels, "metrics_port", None)


def _until_closed(live: Iterator[SimEvent], run: DemoRun, demo: DemoConfig) -> Iterator[SimEvent]:
    """The live stream until its planned end, longer (up to the grace) until a new model serves."""
    for item in live:
        elapsed = time.time() - run.live_start_wall_s if run.live_start_wall_s else 0.0
        if elapsed >= demo.live_s and (_closed(run) or elapsed >= demo.live_s + demo.grace_s):
            return
        yield item


def _closed(run: DemoRun) -> bool:
    """A new version answered; with a rollout, it was also promoted to champion."""
    if len(run.stats.versions_served()) < 2:
        return False
    if not run.config.rollout:
        return True
    registry = DirectoryRegistry(run.settings.registry.path)
    plan = registry.rollout(model_of(run.settings).name)
    return plan is not None and plan.state == "promoted"


def _chain(first: list[SimEvent], rest: Iterator[SimEvent]) -> Iterator[SimEvent]:
    yield from first
    yield from rest
