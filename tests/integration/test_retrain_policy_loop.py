"""The retrain policy loop on the real broker: drift topic in, retrain topic out."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import kafka_support
from drift_events import concept_drift
from kafka_support import read_expected

from loopline.contracts.schemas import (
    DeadLetter,
    DriftEvent,
    LabeledExample,
    RetrainEvent,
    decode,
    encode,
)
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.trainer.policy.service import KafkaRowCounter, RetrainPolicyLoop

DEADLINE_S = 60.0


def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    kafka_support.produce(settings, topic, values, key=b"fraud")


def drift_event(i: int) -> DriftEvent:
    """A critical drift of model 1, happening now."""
    return concept_drift(i, time_ms=int(time.time() * 1000), model_version="1")


def labeled(i: int) -> bytes:
    return encode(
        LabeledExample(
            request_id=f"r{i}", event_id=f"e{i}", model_name="fraud", model_version="1",
            fingerprint="f", entities={}, features=[0.0], score=0.2, label=i % 2,
            event_time=1_700_000_000_000 + i, labeled_at_ms=int(time.time() * 1000),
        )
    )  # fmt: skip


def policy_settings(settings: Settings, **policy: object) -> Settings:
    values: dict = {"min_new_rows": 30, "min_interval_s": 0, "schedule_s": 0, "tick_s": 0.1}
    return replace(settings, policy=replace(settings.policy, **{**values, **policy}))


def run_loop(settings: Settings, **kwargs: object) -> tuple[RetrainPolicyLoop, threading.Thread]:
    loop = RetrainPolicyLoop(settings)
    thread = threading.Thread(target=loop.run, kwargs=kwargs, daemon=True)
    thread.start()
    return loop, thread


def test_rows_are_counted_by_kafka_timestamp(isolated_settings: Settings, topics: Topics) -> None:
    before = int(time.time() * 1000)
    produce(isolated_settings, topics.labeled, [labeled(i) for i in range(25)])
    counter = KafkaRowCounter(isolated_settings.kafka, topics.labeled)
    try:
        assert counter(before - 1000) == 25
        assert counter(int(time.time() * 1000) + 60_000) == 0
    finally:
        counter.close()


def test_a_critical_drift_becomes_one_delivered_retrain_event(
    isolated_settings: Settings, topics: Topics
) -> None:
    settings = policy_settings(isolated_settings)
    produce(settings, topics.drift, [encode(drift_event(1)), b"{not json"])
    loop, thread = run_loop(settings, deadline_s=DEADLINE_S, max_retrains=1)
    # Pending until enough labeled rows arrived after the trigger.
    time.sleep(1.0)
    assert loop.emitted == [] and loop.policy.pending is not None
    assert loop.policy.pending.held == "rows"
    produce(settings, topics.labeled, [labeled(i) for i in range(40)])
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    [message] = read_expected(settings, topics.retrain, expect=1)
    event = decode(RetrainEvent, message.value())
    assert message.key() == b"fraud"
    assert event.trigger == "drift" and event.drift_event_ids == ["de-1"]
    assert event.id.startswith("drift-fraud-")
    assert loop.emitted == [event]
    samples = loop.metrics.registry.get_sample_value
    assert samples("loopline_policy_retrain_events_total", {"trigger": "drift",
                                                           "result": "delivered"}) == 1  # fmt: skip
    assert samples("loopline_policy_drift_events_total", {"decision": "invalid"}) == 1
    [letter] = read_expected(settings, topics.dead_letters, expect=1)
    dead = decode(DeadLetter, letter.value())
    assert dead.source_topic == topics.drift and dead.original_value() == b"{not json"


def test_a_restarted_policy_does_not_request_the_same_retrain_twice(
    isolated_settings: Settings, topics: Topics
) -> None:
    settings = policy_settings(isolated_settings)
    produce(settings, topics.labeled, [labeled(i) for i in range(5)])
    produce(settings, topics.drift, [encode(drift_event(2))])
    loop, thread = run_loop(settings, deadline_s=DEADLINE_S, max_retrains=1)
    time.sleep(0.5)
    produce(settings, topics.labeled, [labeled(i) for i in range(40)])
    thread.join(DEADLINE_S)
    assert len(loop.emitted) == 1
    # The same drift event again (a drift flow that resumed and re-emitted it),
    # read by a fresh policy process with a new consumer group.
    produce(settings, topics.drift, [encode(drift_event(2))])
    fresh = replace(
        settings, kafka=replace(settings.kafka, consumer_group_prefix=f"{topics.prefix}g2-")
    )
    again = RetrainPolicyLoop(fresh)
    assert again.restore() == 1
    again.run(deadline_s=3.0)
    assert again.emitted == []
    assert len(read_expected(settings, topics.retrain, expect=1)) == 1
