"""The trainer on the real broker: bootstrap from topics, announcements, retrain service."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fraud_repo import FRAUD_FEATURES
from kafka_support import produce_records, read_expected
from synthetic_fraud import synthetic_history, write_jsonl
from trainer_support import quick_trainer_settings, training_set_of

from loopline.contracts.schemas import (
    DeadLetter,
    ModelUpdate,
    RetrainEvent,
    decode,
    encode,
)
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.registry.directory import DirectoryRegistry
from loopline.trainer.commands import register
from loopline.trainer.data import DataRequest, load_training_set
from loopline.trainer.kafka_io import KafkaAnnouncer
from loopline.trainer.pipeline import Trainer
from loopline.trainer.service import Handled, RetrainService


def small_settings(base: Settings, tmp_path: Path, **trainer: Any) -> Settings:
    return quick_trainer_settings(
        base, tmp_path, min_rows=200, min_positives=10, window_hours=36, **trainer
    )


def history_files(tmp_path: Path) -> DataRequest:
    """A bootstrap request on a small synthetic history written as JSONL files."""
    txs, outcomes = synthetic_history(n_cards=300, hours=36, seed=4)
    return DataRequest(
        bootstrap_events=str(write_jsonl(tmp_path / "events.jsonl", txs)),
        bootstrap_outcomes=str(write_jsonl(tmp_path / "outcomes.jsonl", outcomes)),
    )


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    produce_records(settings, [(topic, key, value) for key, value in records])


def test_bootstrap_from_topics_and_announcements_consumed_back(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = small_settings(isolated_settings, tmp_path)
    txs, outcomes = synthetic_history(n_cards=300, hours=36, seed=4)
    produce(settings, topics.events, [(t.card_id.encode(), encode(t)) for t in txs])
    # A malformed event on the topic is counted and skipped, not fatal.
    produce(settings, topics.events, [(b"c", b'{"event_id": "broken"}')])
    produce(settings, topics.outcomes, [(o.event_id.encode(), encode(o)) for o in outcomes])

    data = load_training_set(settings, DataRequest(bootstrap_events="topic"))
    expected = training_set_of(txs, outcomes, window_hours=36)
    assert data.ids == expected.ids and data.dropped["invalid_events"] == 1
    np.testing.assert_array_equal(data.features, expected.features)

    announcer = KafkaAnnouncer(settings.kafka, topics.model_updates)
    reg = DirectoryRegistry(settings.registry.path)
    report = Trainer(settings.trainer, reg, announcer=announcer).train(data)
    announcer.close()
    assert report.accepted and report.announced

    # `loopline models promote 1` re-announces the same champion, via the CLI path.
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "promote", "1"])
    assert args.func(args, settings) == 0

    messages = read_expected(settings, topics.model_updates, expect=2)
    assert [m.key() for m in messages] == [b"fraud", b"fraud"]
    updates = [decode(ModelUpdate, m.value() or b"") for m in messages]
    champion = reg.resolve("fraud", "champion")
    assert champion is not None
    for update, action in zip(updates, ("publish", "promote"), strict=True):
        assert (update.model_name, update.version, update.alias, update.action) == (
            "fraud",
            "1",
            "champion",
            action,
        )
        assert update.sha256 == champion.manifest.sha256
        assert update.fingerprint == FRAUD_FEATURES.fingerprint
        assert update.uri == champion.model_path.resolve().as_uri()


def test_retrain_service_trains_once_per_event_and_dead_letters_garbage(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    # One schedule slot for years: the restarted service below asks for the same one.
    settings = small_settings(isolated_settings, tmp_path, schedule_s=3e8)
    request = history_files(tmp_path)
    drift = RetrainEvent(id="r-1", time_ms=1, trigger="drift", reason="psi", drift_event_ids=["d7"])
    produce(
        settings,
        topics.retrain,
        [(b"fraud", encode(drift)), (b"fraud", b"not json"), (b"fraud", encode(drift))],
    )
    reg = DirectoryRegistry(settings.registry.path)
    announcer = KafkaAnnouncer(settings.kafka, topics.model_updates)
    handled: list[Handled] = []
    service = RetrainService(
        settings,
        reg,
        Trainer(settings.trainer, reg, announcer=announcer),
        lambda: load_training_set(settings, request),
        on_handled=handled.append,
    )
    stop = threading.Event()
    # r-1, garbage, r-1 again, then the scheduled request the service itself sent.
    count = service.run(stop, max_events=4, deadline_s=150)
    announcer.close()
    assert count == 4
    assert [(h.event_id, h.outcome) for h in handled[:2]] == [
        ("r-1", "published"),
        ("r-1", "duplicate"),
    ]
    scheduled = handled[2]
    assert scheduled.event_id.startswith("schedule-fraud-")
    assert scheduled.outcome in {"published", "rejected"}
    versions = reg.versions("fraud")
    assert [v.manifest.extra["retrain_event_id"] for v in versions] == ["r-1", scheduled.event_id]
    assert versions[0].manifest.extra["drift_event_ids"] == ["d7"]
    assert versions[1].manifest.extra["trigger"] == "schedule"

    (letter,) = read_expected(settings, topics.dead_letters, expect=1)
    dead = decode(DeadLetter, letter.value() or b"")
    assert (dead.source_topic, dead.reason, dead.original_value()) == (
        topics.retrain,
        "malformed",
        b"not json",
    )
    announced = read_expected(
        settings, topics.model_updates, expect=1 + (scheduled.outcome == "published")
    )
    assert decode(ModelUpdate, announced[0].value() or b"").version == "1"

    # Restarted, the group resumes after the committed events; its own schedule
    # request for the same slot is recognised, so nothing is trained again.
    after_restart: list[Handled] = []
    again = RetrainService(
        settings,
        reg,
        Trainer(settings.trainer, reg),
        lambda: load_training_set(settings, request),
        on_handled=after_restart.append,
    )
    again.run(threading.Event(), max_events=1, deadline_s=60)
    assert [(h.event_id, h.outcome) for h in after_restart] == [(scheduled.event_id, "duplicate")]
    assert len(reg.versions("fraud")) == 2


def test_an_event_the_registry_refuses_is_read_again_until_it_is_published(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = small_settings(isolated_settings, tmp_path, schedule_s=0)
    request = history_files(tmp_path)
    produce(settings, topics.retrain, [(b"fraud", encode(RetrainEvent("r-9", 1, "drift", "x")))])
    # A file where the versions folder goes: the registry refuses every publish.
    blocker = settings.registry.path / "fraud" / "versions"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    handled: list[Handled] = []

    def on_handled(h: Handled) -> None:
        handled.append(h)
        if h.outcome == "deferred":
            blocker.unlink()  # the disk is fixed while the service waits

    reg = DirectoryRegistry(settings.registry.path)
    data = load_training_set(settings, request)  # once: both tries train on it
    service = RetrainService(
        settings,
        reg,
        Trainer(settings.trainer, reg),
        lambda: data,
        on_handled=on_handled,
        retry_first_s=0.2,
    )
    assert service.run(threading.Event(), max_events=1, deadline_s=120) == 1
    assert [(h.event_id, h.outcome) for h in handled] == [("r-9", "deferred"), ("r-9", "published")]
    assert [v.manifest.extra["retrain_event_id"] for v in reg.versions("fraud")] == ["r-9"]
