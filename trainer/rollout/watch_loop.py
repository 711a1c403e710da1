"""`loopline run rollout`: promote or abort running rollouts from the labeled log.

A long-running service around :class:`RolloutWatcher` (:mod:`.watcher`). Every
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
import threading
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry

from loopline.config.cli import service_group, settings_of
from loopline.contracts.settings import RolloutSettings, Settings
from loopline.contracts.tasks import BINARY, check_task
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.rollout.policy import RolloutPolicy
from loopline.trainer.rollout.label_source import kafka_label_sources
from loopline.trainer.rollout.watch_metrics import RolloutMetrics
from loopline.trainer.rollout.watcher import PlanEnd, RolloutWatcher

log = logging.getLogger("loopline.trainer.rollout")


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

    from loopline.trainer.command_support import new_announcer, open_registry

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
    announcer = None if args.no_announce else new_announcer(settings)
    registry = open_registry(settings)
    watcher = RolloutWatcher(
        registry,
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
        model, cfg.task, registry.where(), topics.labeled, rollout.decide_every_s,
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
