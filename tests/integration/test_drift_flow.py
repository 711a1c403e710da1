"""The drift dataflow on the real broker: predictions + labeled in, drift events out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import kafka_support
from bytewax.recovery import RecoveryConfig
from bytewax.testing import run_main
from drift_inputs import FAST, FEATURES, SHIFTED, labeled, predictions
from kafka_support import read_to_end

from loopline.contracts.schemas import (
    DeadLetter,
    DriftEvent,
    LabeledExample,
    PredictionLog,
    decode,
    encode,
)
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.streams.common.bytewax_running import ensure_recovery_dir
from loopline.streams.drift import DriftMonitor
from loopline.streams.drift.bytewax_flow import build_flow
from loopline.streams.drift.config import DriftFlowConfig
from loopline.streams.drift.metrics import drift_metrics


def expected_events(logs: list[PredictionLog], examples: list[LabeledExample]) -> set[str]:
    monitor = DriftMonitor("fraud", FEATURES, FAST)
    ids = {e.id for log in logs for e in monitor.update_prediction(log)}
    return ids | {e.id for ex in examples for e in monitor.update_labeled(ex)}


def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    # One partition: the order the monitor sees is the order produced.
    kafka_support.produce(settings, topic, values, partition=0)


def run_flow(settings: Settings, recovery: Path | None = None) -> None:
    cfg = DriftFlowConfig.from_settings(replace(settings, drift=FAST), drain_idle_s=1.0)
    config = None
    if recovery is not None:
        config = RecoveryConfig(str(ensure_recovery_dir(recovery, 1)))
    run_main(build_flow(cfg), epoch_interval=None, recovery_config=config)


def test_drift_events_and_dead_letters_come_out_of_the_flow(
    isolated_settings: Settings, topics: Topics
) -> None:
    logs, examples = predictions(4000, shift_at=2000), labeled(4000, drift_at=2000)
    bad_vector = replace(logs[10], request_id="short", features=[1.0])
    produce(
        isolated_settings,
        topics.predictions,
        [encode(x) for x in logs[:20]]
        + [b"not json", encode(bad_vector)]
        + [encode(x) for x in logs[20:]],
    )
    produce(isolated_settings, topics.labeled, [encode(x) for x in examples] + [b"{}"])
    alarms = drift_metrics().alarms
    before = alarms.labels("fraud", "data", FEATURES[SHIFTED], "critical")._value.get()

    run_flow(isolated_settings)

    events = [decode(DriftEvent, m.value()) for m in read_to_end(isolated_settings, topics.drift)]
    kinds = {(e.kind, e.feature) for e in events}
    assert ("data", FEATURES[SHIFTED]) in kinds
    assert ("concept", "error") in kinds and ("performance", "auc") in kinds
    assert {e.id for e in events} == expected_events(logs, examples)
    assert all(e.model_version == "1" for e in events)
    letters = [
        decode(DeadLetter, m.value()) for m in read_to_end(isolated_settings, topics.dead_letters)
    ]
    reasons = sorted((d.source_topic, d.reason) for d in letters)
    assert reasons == sorted(
        [
            (topics.predictions, "malformed"),
            (topics.predictions, "invalid"),
            (topics.labeled, "malformed"),
        ]
    )
    after = alarms.labels("fraud", "data", FEATURES[SHIFTED], "critical")._value.get()
    shifted = [e for e in events if e.feature == FEATURES[SHIFTED]]
    assert after - before == sum(e.severity == "critical" for e in shifted)


def test_detector_state_survives_a_restart(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    logs, examples = predictions(4000, shift_at=2600, seed=3), labeled(4000, 2600, seed=4)
    # First run: the stable part only; the flow snapshots and stops.
    produce(isolated_settings, topics.predictions, [encode(x) for x in logs[:2300]])
    produce(isolated_settings, topics.labeled, [encode(x) for x in examples[:2300]])
    run_flow(isolated_settings, tmp_path / "recovery")
    assert read_to_end(isolated_settings, topics.drift) == []
    # Second run resumes the detectors: the shift is judged against the first
    # run's references, and ids match an uninterrupted run.
    produce(isolated_settings, topics.predictions, [encode(x) for x in logs[2300:]])
    produce(isolated_settings, topics.labeled, [encode(x) for x in examples[2300:]])
    run_flow(isolated_settings, tmp_path / "recovery")
    events = [decode(DriftEvent, m.value()) for m in read_to_end(isolated_settings, topics.drift)]
    assert events and {e.id for e in events} == expected_events(logs, examples)
