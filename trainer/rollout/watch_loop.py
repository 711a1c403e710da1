"""`loopline run rollout`: promote or abort running rollouts from the labeled log.

A long-running service around :class:`RolloutWatcher`. Every
``rollout.decide_every_s`` it reads the model's plan from the registry. When a
new plan runs, it builds a fresh :class:`RolloutPolicy` and reads the labeled
topic from just before the plan started (per partition, by timestamp; manual
assignment in a private group, nothing committed), counting each example
scored after the start by the candidate or the champion version for its arm.
On each tick the policy decides; "promote" or "abort" ends the plan in the
registry (a compare-and-set: when serving or a person ended it first, that
wins) and is announced on the model-updates topic, acknowledged by the broker
(an unacknowledged announcement is retried on the next tick). When the plan
ends elsewhere its evidence is dropped and the watcher waits for the next.

Error-rate and latency aborts need per-arm calls, which only serving sees:
they happen there. ``loopline models rollout watch`` runs the same watcher for
one plan.

The model's task (:class:`RolloutWatchConfig` ``task``, passed by the caller)
chooses the evidence: per-arm AUC and log loss for ``binary``, RMSE and MAE
for ``regression`` (``rollout.rmse_margin``, ``rollout.mae_margin``), each
exported as a gauge.
"""

from __future__ import annotations

import argparse
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from loopline.config.cli import service_group, settings_of
from loopline.config.kafka import consumer_config
from loopline.contracts import metric_names as mn
from loopline.contracts.errors import DeliveryError, ModelError, SchemaError, StackError
from loopline.contracts.schemas import LabeledExample, ModelUpdate, decode
from loopline.contracts.settings import KafkaSettings, RolloutSettings, Settings
from loopline.contracts.tasks import BINARY, REGRESSION, check_task
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.registry.directory import ModelVersion
from loopline.rollout.plan import ARMS, RolloutPlan, plan_arm
from loopline.rollout.policy import Decision, RolloutPolicy
from loopline.trainer.publish_policy import rollout_update, share_text

log = logging.getLogger("loopline.trainer.rollout")

# Producer timestamps come from wall clocks that may disagree a little: read from
# this long before the plan started (examples from before it are filtered anyway).
CLOCK_SKEW_MS = 60_000
METADATA_TIMEOUT_S = 10.0
POLL_BATCH = 500


@dataclass(frozen=True)
class RolloutWatchConfig:
    """What ``loopline run rollout`` watches, resolved from :class:`Settings` at the edge.

    >>> cfg = RolloutWatchConfig.from_settings(Settings(), task="regression")
    >>> cfg.model, cfg.task, cfg.new_policy().task
    ('fraud', 'regression', 'regression')
    """

    model: str
    rollout: RolloutSettings
    # What labels and scores mean: "binary" (AUC, log loss) or "regression"
    # (RMSE, MAE). Passed by the caller, not read from Settings.
    task: str = BINARY

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RolloutWatchConfig:
        """From the settings; the task is the repo model's unless given."""
        overrides.setdefault("task", model_of(settings).task)
        cfg = cls(model=model_of(settings).name, rollout=settings.rollout)
        cfg = replace(cfg, **overrides)
        check_task(cfg.task, "rollout")
        return cfg

    def new_policy(self) -> RolloutPolicy:
        """A fresh policy for one plan."""
        return RolloutPolicy.from_settings(self.rollout, task=self.task)


def count_example(policy: RolloutPolicy, plan: RolloutPlan, example: LabeledExample) -> bool:
    """Feed one labeled example to the policy if it belongs to the plan; True when it did.

    >>> plan = RolloutPlan("fraud", "3", "2", plan_id="p", created_ms=0)
    >>> ex = LabeledExample("r", "e", "fraud", "3", "fp", {}, [], 0.9, 1, 5, 6)
    >>> policy = RolloutPolicy()
    >>> count_example(policy, plan, ex), policy.arms["candidate"].labels
    (True, 1)
    """
    if example.model_name != plan.model:
        return False
    arm = plan_arm(plan, example.model_version, example.event_time)
    if arm is None:
        return False
    policy.update_label(arm, example.score, example.label)
    return True


class PlanWatch:
    """The evidence for one running plan: labeled records in, a decision out (no I/O).

    >>> from loopline.contracts.schemas import encode
    >>> plan = RolloutPlan("fraud", "3", "2", plan_id="p", created_ms=100)
    >>> watch = PlanWatch(plan, RolloutPolicy(min_labels=1))
    >>> ex = LabeledExample("r", "e", "fraud", "3", "fp", {}, [], 0.9, 1, 150, 160)
    >>> [watch.offer(encode(ex)), watch.offer(b"{not json"), watch.offer(encode(ex)[:-1])]
    [True, False, False]
    >>> watch.counted, watch.ignored, watch.malformed
    (1, 0, 2)
    """

    def __init__(self, plan: RolloutPlan, policy: RolloutPolicy) -> None:
        self.plan = plan
        self.policy = policy
        self.counted = 0
        self.ignored = 0  # another model or version, or scored before the plan
        self.malformed = 0

    def offer(self, raw: bytes) -> bool:
        """One labeled-topic record; True when it counted for an arm."""
        try:
            example = decode(LabeledExample, raw)
        except SchemaError as e:
            self.malformed += 1
            if self.malformed <= 3 or self.malformed % 1000 == 0:
                log.warning("labeled: skipping a malformed example (%d so far): %s",
                            self.malformed, e)  # fmt: skip
            return False
        if count_example(self.policy, self.plan, example):
            self.counted += 1
            return True
        self.ignored += 1
        return False

    def decide(self) -> Decision:
        return self.policy.decide()


# -- reading the labeled topic -------------------------------------------------------
class LabelSource(Protocol):
    def poll(self, timeout_s: float) -> list[bytes]: ...
    def close(self) -> None: ...


class KafkaLabelSource:
    """The labeled topic from a point in time: manual assignment, nothing committed."""

    def __init__(self, kafka: KafkaSettings, topic: str, since_ms: int, name: str) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        self.topic = topic
        group = f"rollout-watch-{name}-{uuid.uuid4().hex[:8]}"
        self._consumer = Consumer(consumer_config(kafka, group))
        try:
            meta = self._consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                raise StackError(
                    f"topic {topic!r} is not available: {tmeta.error if tmeta else ''}"
                )
            parts = sorted(tmeta.partitions)
            # The end before the time lookup: where "nothing at or after since_ms" starts.
            ends = {
                p: self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=METADATA_TIMEOUT_S
                )[1]
                for p in parts
            }
            found = self._consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in parts], timeout=METADATA_TIMEOUT_S
            )
            start = [
                TopicPartition(
                    topic, tp.partition, tp.offset if tp.offset >= 0 else ends[tp.partition]
                )
                for tp in found
            ]
            self._consumer.assign(start)
        except KafkaException as e:
            self._consumer.close()
            raise StackError(f"cannot read {topic!r}: {e} (is the stack up? `loopline up`)") from e
        except StackError:
            self._consumer.close()
            raise
        self.start_offsets = {tp.partition: tp.offset for tp in start}

    def poll(self, timeout_s: float) -> list[bytes]:
        from confluent_kafka import KafkaError

        out: list[bytes] = []
        for msg in self._consumer.consume(POLL_BATCH, timeout_s):
            err = msg.error()
            if err is None:
                value = msg.value()
                if value is not None:
                    out.append(value)
            elif err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise StackError(f"reading {self.topic!r}: {err}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("labeled: %s", err)
        return out

    def close(self) -> None:
        self._consumer.close()


def kafka_label_sources(settings: Settings) -> Callable[[RolloutPlan], LabelSource]:
    """Opens the labeled topic of ``settings`` from just before a plan started."""
    topic = Topics(settings.kafka.topic_prefix).labeled

    def open_source(plan: RolloutPlan) -> LabelSource:
        return KafkaLabelSource(
            settings.kafka, topic, plan.created_ms - CLOCK_SKEW_MS, plan.plan_id
        )

    return open_source


# -- metrics ----------------------------------------------------------------------------
class RolloutMetrics:
    """The watcher's Prometheus metrics (names from ``loopline.contracts.metric_names``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def gauge(m: mn.Metric) -> Gauge:
            return Gauge(m.name, m.help, list(m.labels), registry=registry)

        self.labels = gauge(mn.ROLLOUT_ARM_LABELS)
        self.auc = gauge(mn.ROLLOUT_ARM_AUC)
        self.log_loss = gauge(mn.ROLLOUT_ARM_LOG_LOSS)
        # Regression gauges are registered on first regression evidence, so a binary
        # watcher exports exactly what it did before regression existed.
        self._gauge = gauge
        self.rmse: Gauge | None = None
        self.mae: Gauge | None = None
        self.running = gauge(mn.ROLLOUT_RUNNING)
        self.decisions = Counter(
            mn.ROLLOUT_DECISIONS.name,
            mn.ROLLOUT_DECISIONS.help,
            list(mn.ROLLOUT_DECISIONS.labels),
            registry=registry,
        )

    def evidence(
        self, model: str, evidence: dict[str, dict[str, float]], task: str = BINARY
    ) -> None:
        # Only the task's own quality gauges: a binary model exports no RMSE series.
        if task == REGRESSION:
            if self.rmse is None or self.mae is None:
                self.rmse = self._gauge(mn.ROLLOUT_ARM_RMSE)
                self.mae = self._gauge(mn.ROLLOUT_ARM_MAE)
            quality = {"rmse": self.rmse, "mae": self.mae}
        else:
            quality = {"auc": self.auc, "log_loss": self.log_loss}
        for arm in ARMS:
            ev = evidence.get(arm, {})
            self.labels.labels(model, arm).set(ev.get("labels", 0))
            for key, gauge in quality.items():
                gauge.labels(model, arm).set(ev.get(key, math.nan))


# -- the watcher ------------------------------------------------------------------------
class Announcer(Protocol):
    def announce(self, update: ModelUpdate) -> None: ...


class PlanRegistry(Protocol):
    """What the watcher needs from a registry (``DirectoryRegistry`` has it all)."""

    def rollout(self, model: str) -> RolloutPlan | None: ...
    def resolve(self, model: str, alias: str) -> ModelVersion | None: ...
    def finish_rollout(
        self, model: str, plan_id: str, state: str, reason: str
    ) -> RolloutPlan | None: ...


@dataclass(frozen=True)
class PlanEnd:
    """A watched plan that stopped running.

    ``decision`` is the policy's when the watcher ended it (None: it ended
    elsewhere); ``finished`` is the plan record the watcher wrote (None: it
    did not write one, because the plan was ended or replaced first).
    """

    plan: RolloutPlan
    decision: Decision | None
    finished: RolloutPlan | None


class RolloutWatcher:
    """Follows a model's running rollout plans and ends them by the policy.

    ``open_source`` opens the labeled records for a plan, ``new_policy`` makes
    a fresh policy for each plan. With ``plan_id`` it follows that plan only.
    """

    def __init__(
        self,
        registry: PlanRegistry,
        model: str,
        *,
        open_source: Callable[[RolloutPlan], LabelSource],
        new_policy: Callable[[], RolloutPolicy],
        announcer: Announcer | None = None,
        metrics: RolloutMetrics | None = None,
        decide_every_s: float = 2.0,
        plan_id: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.model = model
        self.open_source = open_source
        self.new_policy = new_policy
        self.announcer = announcer
        self.metrics = metrics or RolloutMetrics(CollectorRegistry())
        self.decide_every_s = max(0.05, decide_every_s)
        self.plan_id = plan_id
        self.clock = clock
        for action in ("promote", "abort"):
            # Present from the start at 0, so a first decision shows up in increase().
            self.metrics.decisions.labels(model, action)
        self.metrics.running.labels(model).set(0)
        self.watch: PlanWatch | None = None
        self.source: LabelSource | None = None
        self.last_decision: Decision | None = None
        self.outbox: list[ModelUpdate] = []
        self.announced: list[ModelUpdate] = []
        self._idle_logged = False

    # -- per plan ------------------------------------------------------------------------
    def follow(self, plan: RolloutPlan) -> None:
        """Start collecting evidence for running ``plan`` (its records from its start)."""
        self._drop()
        source = self.open_source(plan)
        self.watch = PlanWatch(plan, self.new_policy())
        self.source = source
        self.last_decision = None
        self._idle_logged = False
        self.metrics.running.labels(self.model).set(1)
        self.metrics.evidence(self.model, {}, self.watch.policy.task)
        log.info(
            "rollout %s of %s started: v%s in %s (%s) against champion v%s; counting labels "
            "from %s",
            plan.plan_id, plan.model, plan.candidate_version, plan.mode, share_text(plan),
            plan.champion_version, _utc(plan.created_ms),
        )  # fmt: skip

    def _drop(self) -> None:
        if self.source is not None:
            self.source.close()
        self.source = None
        self.watch = None
        self.metrics.running.labels(self.model).set(0)

    def pump(self, timeout_s: float) -> int:
        """Read labeled records for up to ``timeout_s``; returns how many counted."""
        if self.source is None or self.watch is None:
            return 0
        counted = 0
        for raw in self.source.poll(timeout_s):
            counted += self.watch.offer(raw)
        return counted

    def tick(self) -> PlanEnd | None:
        """Reconcile with the registry's plan, then decide once; the plan that ended, if any."""
        self._flush()
        try:
            current = self.registry.rollout(self.model)
        except ModelError as e:
            log.warning("rollout: cannot read the plan of %s: %s", self.model, e)
            return None
        watch = self.watch
        if watch is not None:
            same = current is not None and current.plan_id == watch.plan.plan_id
            if not (same and current is not None and current.running):
                how = f"{current.state}: {current.reason}" if same and current else "replaced"
                log.info("rollout %s ended elsewhere (%s); its evidence is dropped",
                         watch.plan.plan_id, how)  # fmt: skip
                self._drop()
                return PlanEnd(watch.plan, None, None)
            return self._decide(watch)
        if current is not None and current.running and self.plan_id in ("", current.plan_id):
            try:
                self.follow(current)
            except StackError as e:
                log.error("rollout %s: cannot read the labeled log (retrying): %s",
                          current.plan_id, e)  # fmt: skip
            return None
        if not self._idle_logged:
            log.info("rollout: no running plan of %s; waiting", self.model)
            self._idle_logged = True
        return None

    def _decide(self, watch: PlanWatch) -> PlanEnd | None:
        plan = watch.plan
        decision = watch.decide()
        self.metrics.evidence(self.model, decision.evidence, watch.policy.task)
        previous = self.last_decision
        self.last_decision = decision
        if decision.action == "continue":
            if previous is None or previous.reason != decision.reason:
                log.info("rollout %s: continue: %s (%d labels counted, %d ignored)",
                         plan.plan_id, decision.reason, watch.counted, watch.ignored)  # fmt: skip
            return None
        state = "promoted" if decision.action == "promote" else "aborted"
        log.info("rollout %s: %s: %s", plan.plan_id, decision.action, decision.reason)
        done = self.registry.finish_rollout(
            self.model, plan.plan_id, state, f"policy: {decision.reason}"
        )
        self._drop()
        if done is None:
            log.info("rollout %s was ended elsewhere first; nothing to do", plan.plan_id)
            return PlanEnd(plan, decision, None)
        self.metrics.decisions.labels(self.model, decision.action).inc()
        champion = self.registry.resolve(self.model, "champion")
        if champion is None:
            log.error("rollout %s %s, but %s has no champion to announce", plan.plan_id,
                      state, self.model)  # fmt: skip
        else:
            self.outbox.append(rollout_update(champion, done))
            self._flush()
        return PlanEnd(plan, decision, done)

    def _flush(self) -> None:
        """Announce what waits, oldest first; a failure is retried on the next tick."""
        if self.announcer is None:
            self.outbox.clear()
            return
        while self.outbox:
            update = self.outbox[0]
            try:
                self.announcer.announce(update)
            except DeliveryError as e:
                log.error("rollout announcement not delivered (retrying): %s", e)
                return
            self.announced.append(self.outbox.pop(0))
            log.info("rollout %s %s: announced", update.plan.get("plan_id"),
                     update.plan.get("state"))  # fmt: skip

    # -- the loop ------------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event | None = None,
        *,
        deadline_s: float | None = None,
        max_plans: int | None = None,
    ) -> list[PlanEnd]:
        """Tick every ``decide_every_s`` and read labels in between, until ``stop``.

        Returns the plans that stopped running meanwhile (``max_plans``: stop
        after that many; ``deadline_s``: after that long).
        """
        stop = stop or threading.Event()
        until = math.inf if deadline_s is None else self.clock() + deadline_s
        ended: list[PlanEnd] = []
        next_tick = self.clock()
        while not stop.is_set() and self.clock() < until:
            if self.clock() >= next_tick:
                next_tick = self.clock() + self.decide_every_s
                end = self.tick()
                if end is not None:
                    ended.append(end)
                    if max_plans is not None and len(ended) >= max_plans:
                        break
            budget = min(0.5, max(0.0, min(next_tick, until) - self.clock()))
            if self.source is not None:
                self.pump(budget)
            else:
                stop.wait(budget)
        return ended

    def close(self) -> None:
        self._drop()


# -- CLI ----------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add ``run rollout`` to a subparsers object."""
    run = service_group(subparsers)
    p = run.add_parser(
        "rollout",
        help="promote or abort running rollouts from per-arm labels (AUC, log loss; "
        "RMSE, MAE for regression)",
        description="Follow the model's rollout plan in the registry; for each running plan, "
        "count the labeled examples scored by the candidate and by the champion since it "
        "started, and end it by Settings.rollout: promote after min_labels per arm when the "
        "candidate is not worse by the margins, abort when it is. Every end is announced on "
        "the model-updates topic.",
    )
    p.add_argument("--model", help="model name (default: the repo's model)")
    p.add_argument(
        "--metrics-port", type=int, help="Prometheus port (default rollout.metrics_port)"
    )
    p.add_argument("--max-plans", type=int, help="exit after this many plans stopped running")
    p.add_argument("--max-seconds", type=float, help="exit after this long")
    p.add_argument("--no-announce", action="store_true", help="do not announce on Kafka")
    p.set_defaults(func=run_rollout_watch)


def run_rollout_watch(
    args: argparse.Namespace, settings: Settings | None = None, **overrides: Any
) -> int:
    """``loopline run rollout``; ``overrides`` go to :class:`RolloutWatchConfig` (``task=``)."""
    import signal

    from prometheus_client import start_http_server

    from loopline.registry.directory import DirectoryRegistry
    from loopline.trainer.kafka_io import KafkaAnnouncer

    settings = settings_of(args, settings)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.model:
        overrides = {"model": args.model, **overrides}
    cfg = RolloutWatchConfig.from_settings(settings, **overrides)
    rollout, model = cfg.rollout, cfg.model
    metrics = RolloutMetrics(CollectorRegistry())
    port = args.metrics_port if args.metrics_port is not None else rollout.metrics_port
    if port:
        start_http_server(port, registry=metrics.registry)
    topics = Topics(settings.kafka.topic_prefix)
    announcer = None
    if not args.no_announce:
        announcer = KafkaAnnouncer(
            settings.kafka, topics.model_updates, settings.trainer.announce_timeout_s
        )
    watcher = RolloutWatcher(
        DirectoryRegistry(settings.registry.path),
        model,
        open_source=kafka_label_sources(settings),
        new_policy=cfg.new_policy,
        announcer=announcer,
        metrics=metrics,
        decide_every_s=rollout.decide_every_s,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "rollout watcher: %s (%s) in %s, labels from %s, every %.1f s (min %d labels per arm)%s",
        model, cfg.task, settings.registry.path, topics.labeled, rollout.decide_every_s,
        rollout.min_labels, f", metrics on :{port}" if port else "",
    )  # fmt: skip
    ended: list[PlanEnd] = []
    try:
        ended = watcher.run(stop, deadline_s=args.max_seconds, max_plans=args.max_plans)
    except KeyboardInterrupt:
        stop.set()
    finally:
        watcher.close()
        if announcer is not None:
            announcer.close()
    decided = sum(1 for e in ended if e.finished is not None)
    print(f"rollout watcher: {len(ended)} plan(s) stopped running, {decided} ended by the policy")
    return 0


def _utc(ms: int) -> str:
    """UTC time of epoch ms.

    >>> _utc(1700000000000)
    '2023-11-14 22:13:20 UTC'
    """
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))
