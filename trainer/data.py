"""Choosing and loading a training set: the offline store, or a bootstrap replay."""

from __future__ import annotations

from dataclasses import dataclass

from loopline.contracts.errors import ConfigError
from loopline.contracts.fraud import get_feature_set
from loopline.contracts.registry import check_task
from loopline.contracts.schemas import Outcome, Transaction
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.trainer import bootstrap, offline
from loopline.trainer.dataset import TrainingSet
from loopline.trainer.progress import Progress, SilentProgress
from loopline.trainer.sources import Source, decode_rows, file_rows


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
    fs = get_feature_set(t.feature_set)
    window = request.window_hours if request.window_hours is not None else t.window_hours
    task = check_task(request.task)
    if not request.bootstrap_events:
        progress.stage("load offline store")
        ts = offline.load_window(t.offline_store, fs, window, request.end_ms, task=task)
        progress.info(f"offline store {t.offline_store}: {len(ts)} labeled rows")
        if len(ts) or not request.fallback_to_bootstrap or task == "regression":
            return ts
        progress.info("no labeled rows yet: bootstrapping from the events topic")
    if task == "regression":
        # The replay counts an event without an outcome as a 0 label once mature:
        # right for fraud (no chargeback), wrong for a real-valued target.
        raise ConfigError(
            "bootstrapping replays binary labels only; train a regression task from the "
            "offline store (drop --bootstrap-events)"
        )
    events = request.bootstrap_events or "topic"
    topics = Topics(settings.kafka.topic_prefix)
    progress.stage("load history")
    txs, bad_tx = read_records(settings, Source.parse(events), Transaction, topics.events)
    outs, bad_out = read_records(
        settings, Source.parse(request.bootstrap_outcomes), Outcome, topics.outcomes
    )
    progress.info(
        f"{len(txs)} events from {Source.parse(events).describe(topics.events)}, "
        f"{len(outs)} outcomes from "
        f"{Source.parse(request.bootstrap_outcomes).describe(topics.outcomes)}"
    )
    progress.stage("replay features")
    ts = bootstrap.build_training_set(
        fs,
        txs,
        outs,
        maturity_s=t.label_maturity_s,
        window_hours=window,
        as_of_ms=request.end_ms,
    )
    dropped = dict(ts.dropped)
    if bad_tx:
        dropped["invalid_events"] = bad_tx
    if bad_out:
        dropped["invalid_outcomes"] = bad_out
    progress.info(f"{len(ts)} point-in-time rows ({ts.positives} positive)")
    return TrainingSet(
        features=ts.features,
        labels=ts.labels,
        event_time_ms=ts.event_time_ms,
        ids=ts.ids,
        feature_names=ts.feature_names,
        source=ts.source,
        dropped=dropped,
    )


def read_records(
    settings: Settings, source: Source, cls: type, default_topic: str
) -> tuple[list, int]:
    """Decoded records of one source and how many were invalid."""
    if source.kind == "file":
        rows = file_rows(source.name)
    else:
        from loopline.trainer.kafka_io import read_history

        rows = read_history(settings.kafka, source.name or default_topic)
    records, rejected = decode_rows(cls, rows)
    return records, rejected.get("invalid", 0)
