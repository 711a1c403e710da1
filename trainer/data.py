"""Choosing and loading a training set: the offline store, or a bootstrap replay."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.contracts.tasks import check_task
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import project_of
from loopline.trainer import bootstrap, offline
from loopline.trainer.dataset import TrainingSet
from loopline.trainer.history import decode_events, decode_outcomes
from loopline.trainer.progress import Progress, SilentProgress
from loopline.trainer.sources import Source, file_rows


@dataclass(frozen=True)
class DataRequest:
    """What to train on. ``bootstrap_events`` set: replay history, else the offline store."""

    bootstrap_events: str = ""
    bootstrap_outcomes: str = "topic"
    window_hours: float | None = None
    end_ms: int | None = None
    # With an empty offline store, fall back to bootstrapping from the events topic.
    fallback_to_bootstrap: bool = True
    # "binary" (0/1 labels) or "regression" (float labels): which label rows are
    # usable and how they are kept; pass the same task to the Trainer.
    task: str = "binary"


def load_training_set(
    settings: Settings, request: DataRequest, progress: Progress | None = None
) -> TrainingSet:
    progress = progress or SilentProgress()
    t = settings.trainer
    fs = project_of(settings).feature_set(settings.project.model)
    window = request.window_hours if request.window_hours is not None else t.window_hours
    task = check_task(request.task)
    if not request.bootstrap_events:
        progress.stage("load offline store")
        ts = offline.load_window(
            t.offline_store,
            fs,
            window,
            request.end_ms,
            task=task,
            exclude_status=t.excluded_feature_statuses,
        )
        progress.info(f"offline store {t.offline_store}: {len(ts)} labeled rows")
        if len(ts) or not request.fallback_to_bootstrap:
            return ts
        progress.info("no labeled rows yet: bootstrapping from the events topic")
    return _bootstrap(settings, request, progress, window, task)


def _bootstrap(
    settings: Settings, request: DataRequest, progress: Progress, window: float, task: str
) -> TrainingSet:
    """Replay the repo's event history through the feature code; label it by outcome."""
    project = project_of(settings)
    model = project.model(settings.project.model)
    fs = project.feature_set(settings.project.model)
    topics = Topics(settings.kafka.topic_prefix)
    source = Source.parse(request.bootstrap_events or "topic")
    sources = [project.source_of_topic(name) for name in project.topics_read(model.name)]
    if source.kind == "file" and len(sources) > 1:
        raise ConfigError(
            f"model {model.name} reads {len(sources)} event sources; bootstrap from their "
            "topics (--bootstrap-events topic), one file cannot hold them"
        )
    progress.stage("load history")
    events: list[dict[str, Any]] = []
    bad_events = 0
    for src in sources:
        where = source if source.kind == "file" else Source("topic", topics.named(src.topic))
        records, bad = decode_events(src, _rows(settings, where, topics.named(src.topic)))
        events += records
        bad_events += bad
    outcome_topic = topics.named(model.outcomes.topic)
    out_source = Source.parse(request.bootstrap_outcomes)
    outs, bad_outs = decode_outcomes(model.outcomes, _rows(settings, out_source, outcome_topic))
    progress.info(
        f"{len(events)} events from {', '.join(s.name for s in sources)}, "
        f"{len(outs)} outcomes from {out_source.describe(outcome_topic)}"
    )
    progress.stage("replay features")
    timeout = {"negative": 0, "positive": 1}.get(settings.labels.timeout_policy)
    ts = bootstrap.build_training_set(
        fs,
        events,
        outs,
        maturity_s=settings.labels.maturity_s,
        window_hours=window,
        as_of_ms=request.end_ms,
        event_id_field=model.scores.event_id,
        time_fields={s.name: s.event_time for s in sources},
        timeout_label=timeout if task == "binary" else None,
        task=task,
    )
    dropped = dict(ts.dropped)
    if bad_events:
        dropped["invalid_events"] = bad_events
    if bad_outs:
        dropped["invalid_outcomes"] = bad_outs
    progress.info(f"{len(ts)} point-in-time rows")
    return replace(ts, dropped=dropped)


def _rows(settings: Settings, source: Source, default_topic: str) -> Iterable[Any]:
    if source.kind == "file":
        return file_rows(source.name)
    from loopline.trainer.kafka_io import read_history

    return read_history(settings.kafka, source.name or default_topic)
