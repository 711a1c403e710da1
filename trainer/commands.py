"""The trainer's CLI subcommands: `train`, `models ...`, `score`, `run trainer`.

The lead's CLI calls :func:`register` with its subparsers; each handler is
stored as ``func`` and called as ``func(args)`` (or ``func(args, settings)``)
with the :class:`Settings` built at the edge in ``args.settings``. Handlers
return a process exit code; :class:`LooplineError` propagates to the CLI,
which prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import threading
import time
from typing import Any

from rich.console import Console

from loopline.config.cli import service_group, settings_of
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of, project_of
from loopline.trainer.command_support import (
    handler,
    new_announcer,
    open_registry,
    open_tracker,
    parse_time,
)
from loopline.trainer.models_commands import register_models

log = logging.getLogger("loopline.trainer")


def register(subparsers: Any) -> None:
    """Add ``train``, ``models``, ``score`` and ``run trainer`` to a subparsers object."""
    _register_train(subparsers)
    register_models(subparsers)
    _register_score(subparsers)
    run = service_group(subparsers)
    p = run.add_parser(
        "trainer",
        help="train on every retrain event (and on a schedule)",
        description="Consume the retrain topic and run one training per event (idempotent by "
        "event id). With --schedule-s, also request a training on that period.",
    )
    p.add_argument("--schedule-s", type=float, help="also train this often (0: events only)")
    p.add_argument("--max-events", type=int, help="exit after handling this many events")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0: none)")
    _data_options(p)
    p.set_defaults(func=handler(_run_trainer))


# -- train ------------------------------------------------------------------------
def _register_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a challenger now; the gate decides whether it becomes champion",
        description="Train LightGBM on the offline store's rolling window (or, with "
        "--bootstrap-events, on replayed history), export ONNX, check parity, gate it "
        "against the champion and publish.",
    )
    p.add_argument("--force", action="store_true", help="publish as champion even if worse")
    p.add_argument(
        "--publish-as",
        choices=("champion", "shadow", "canary"),
        help="where a version that passes the gate goes: champion at once, or a shadow / "
        "canary rollout against the champion (default: rollout.publish_mode; with no "
        "champion yet, or --force, always champion)",
    )
    p.add_argument("--no-announce", action="store_true", help="do not announce on Kafka")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _data_options(p)
    p.set_defaults(func=handler(_train))


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap-events",
        metavar="SOURCE",
        help="replay history instead of the offline store: 'topic' (the events topic), "
        "'topic:NAME', or a .jsonl/.parquet file of transactions",
    )
    p.add_argument(
        "--bootstrap-outcomes",
        metavar="SOURCE",
        default="topic",
        help="labels for --bootstrap-events: 'topic' (default), 'topic:NAME' or a file",
    )
    p.add_argument("--window-hours", type=float, help="rolling window length (hours)")
    p.add_argument(
        "--until",
        help="window end: epoch ms or ISO time (default: newest data)",
    )
    p.add_argument("--maturity-s", type=float, help="bootstrap label maturity window (s)")
    p.add_argument("--num-trees", type=int, help="boosting rounds (upper bound)")
    p.add_argument("--model", help="model name (default: the repo's model)")
    p.add_argument(
        "--task",
        choices=("binary", "regression"),
        help="what the model predicts: binary 0/1 labels (default) or real-valued labels",
    )


def _task(args: argparse.Namespace) -> str:
    # None: the flag was not given; the repo's model definition says.
    return getattr(args, "task", None) or model_of(settings_of(args)).task


def _gate(args: argparse.Namespace) -> dict[str, Any]:
    """The feature set, task and gate of the repo's model (``--task`` overrides the task)."""
    settings = settings_of(args)
    project = project_of(settings)
    model = project.model(settings.project.model)
    return {
        "fs": project.feature_set(model.name),
        "task": _task(args),
        "gate_metric": model.gate_metric,
        "min_improvement": model.min_improvement,
    }


def _trainer_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    changes: dict[str, Any] = {}
    for arg, name in (
        ("window_hours", "window_hours"),
        ("num_trees", "num_trees"),
        ("schedule_s", "schedule_s"),
        ("metrics_port", "metrics_port"),
    ):
        value = getattr(args, arg, None)
        if value is not None:
            changes[name] = value
    settings = dataclasses.replace(
        settings, trainer=dataclasses.replace(settings.trainer, **changes)
    )
    if getattr(args, "maturity_s", None) is not None:
        labels = dataclasses.replace(settings.labels, maturity_s=args.maturity_s)
        settings = dataclasses.replace(settings, labels=labels)
    if getattr(args, "model", None):
        project = dataclasses.replace(settings.project, model=args.model)
        settings = dataclasses.replace(settings, project=project)
    return settings


def _data_request(args: argparse.Namespace) -> Any:
    from loopline.trainer.data import DataRequest

    return DataRequest(
        bootstrap_events=args.bootstrap_events or "",
        bootstrap_outcomes=args.bootstrap_outcomes,
        end_ms=parse_time(args.until) if args.until else None,
        task=_task(args),
    )


def _train(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from loopline.trainer.data import load_training_set
    from loopline.trainer.pipeline import Trainer
    from loopline.trainer.publish_policy import PublishPolicy
    from loopline.trainer.report import ConsoleProgress, summary

    settings = _trainer_settings(args, settings)
    publish = PublishPolicy.from_settings(settings.rollout, mode=args.publish_as)
    # Progress on stderr: stdout holds only the summary (or the JSON report).
    progress = ConsoleProgress(Console(stderr=True))
    announcer = None if args.no_announce else new_announcer(settings)
    try:
        started = time.monotonic()
        data = load_training_set(settings, _data_request(args), progress)
        load_s = time.monotonic() - started
        trainer = Trainer(
            settings.trainer,
            open_registry(settings),
            announcer=announcer,
            progress=progress,
            publish=publish,
            tracker=open_tracker(settings),
            **_gate(args),
        )
        report = trainer.train(data, force=args.force, extra={"trigger": "manual"})
    finally:
        progress.close()
        if announcer is not None:
            announcer.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        console.print(summary(report, load_s))
        if report.rollout_plan_id:
            console.print(
                f"{report.model_name}: v{report.version} runs as a {report.published_as} "
                f"rollout (plan {report.rollout_plan_id}) against champion "
                f"v{report.champion_version}; the champion alias did not move. Follow it with "
                "`loopline models rollout status`; `loopline run rollout` promotes or aborts it."
            )
    return 0


# -- models -----------------------------------------------------------------------
# -- score ------------------------------------------------------------------------
def _register_score(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="batch-score a Parquet file with the champion model",
        description="Score a Parquet (or JSONL) file of transactions (features replayed with "
        "the shared feature code), of feature vectors (a 'features' list column) or of "
        "feature columns; write a Parquet with score, model_name and model_version.",
    )
    p.add_argument("input", help="Parquet/JSONL of events or feature vectors")
    p.add_argument("output", help="Parquet file to write")
    p.add_argument("--model", help="model name (default: the repo's model)")
    p.add_argument("--alias", default="champion")
    p.add_argument("--version", default="", help="a version instead of the alias")
    p.add_argument(
        "--history",
        help="events file: score each input row as of its time against this history "
        "(input rows are not applied)",
    )
    p.add_argument("--with-features", action="store_true", help="also write the feature vectors")
    p.set_defaults(func=handler(_score))


def _score(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from loopline.trainer.scoring import ScoringModel, score_file

    project = project_of(settings)
    name = args.model or model_of(settings).name
    model = ScoringModel.load(
        open_registry(settings),
        name,
        project.feature_set(name),
        project.model(name).scores,
        alias=args.alias,
        version=args.version,
    )
    s = score_file(
        model, args.input, args.output, history=args.history, with_features=args.with_features
    )
    console.print(
        f"scored {s.rows} rows ({s.mode}) with {s.model_name} v{s.model_version}: "
        f"mean score {s.mean_score:.4f} -> {s.output}"
        + (
            f" [yellow]({s.failed} rows not scorable: see the error column)[/yellow]"
            if s.failed
            else ""
        )
    )
    return 0


# -- run trainer --------------------------------------------------------------------
def _run_trainer(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from loopline.trainer.data import load_training_set
    from loopline.trainer.kafka_io import KafkaAnnouncer
    from loopline.trainer.pipeline import Trainer
    from loopline.trainer.publish_policy import PublishPolicy
    from loopline.trainer.report import LogProgress
    from loopline.trainer.service import RetrainService
    from loopline.trainer.telemetry import Telemetry

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _trainer_settings(args, settings)
    request = _data_request(args)
    progress = LogProgress(log)
    announcer = new_announcer(settings)
    telemetry = Telemetry.start(settings.trainer.metrics_port)
    registry = open_registry(settings)
    service = RetrainService(
        settings,
        registry,
        Trainer(
            settings.trainer,
            registry,
            announcer=announcer,
            progress=progress,
            publish=PublishPolicy.from_settings(settings.rollout),
            tracker=open_tracker(settings),
            **_gate(args),
        ),
        lambda: load_training_set(settings, request, progress),
        on_handled=telemetry.record,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    topic = Topics(settings.kafka.topic_prefix).retrain
    console.print(f"trainer: waiting for retrain events on {topic} (Ctrl-C stops)")
    try:
        handled = service.run(stop, max_events=args.max_events)
    finally:
        assert isinstance(announcer, KafkaAnnouncer)
        announcer.close()
    console.print(f"trainer: stopped after {handled} event(s)")
    return 0
