"""The drift dataflow on the real broker: predictions + labeled in, drift events out."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import kafka_support
from bytewax.recovery import RecoveryConfig
from bytewax.testing import run_main
from fraud_repo import FRAUD_FEATURES
from kafka_support import read_to_end

from loopline.contracts.schemas import (
    DeadLetter,
    DriftEvent,
    LabeledExample,
    PredictionLog,
    decode,
    encode,
)
from loopline.contracts.settings import DriftSettings, Settings
from loopline.contracts.topics import Topics
from loopline.streams.common.bytewax_running import ensure_recovery_dir
from loopline.streams.drift import DriftMonitor
from loopline.streams.drift.bytewax_flow import build_flow
from loopline.streams.drift.config import DriftFlowConfig
from loopline.streams.drift.metrics import drift_metrics

FAST = DriftSettings(
    reference_size=500,
    warmup=200,
    data_min_persist=128,
    performance_window=500,
    performance_every=50,
)
FEATURES = FRAUD_FEATURES.model_features
SHIFTED = 5


def predictions(n: int, shift_at: int, seed: int = 1) -> list[PredictionLog]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        row = [rng.lognormvariate(2.0, 0.8) for _ in FEATURES]
        if i >= shift_at:
            row[SHIFTED] = row[SHIFTED] * 2.5 + 10.0
        out.append(
            PredictionLog(
                request_id=f"r{i}",
                model_name="fraud",
                model_version="1",
                feature_set="fraud",
                fingerprint="fp",
                entities={"card": f"c{i % 50}"},
                features=row,
                score=min(1.0, rng.betavariate(1, 10)),
                event_time=1_700_000_000_000 + i,
                served_at_ms=1_700_000_000_000 + i,
            )
        )
    return out


def labeled(n: int, drift_at: int, seed: int = 2) -> list[LabeledExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = 1 if rng.random() < 0.2 else 0
        mean = (0.8 if i < drift_at else 0.35) if y else 0.2
        out.append(
            LabeledExample(
                request_id=f"r{i}",
                event_id=f"e{i}",
                model_name="fraud",
                model_version="1",
                fingerprint="fp",
                entities={},
                features=[0.0] * len(FEATURES),
                score=min(1.0, max(0.0, rng.gauss(mean, 0.15))),
                label=y,
                event_time=1_700_000_000_000 + i,
                labeled_at_ms=1_700_000_100_000 + i,
            )
        )
    return out


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
