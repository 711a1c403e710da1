"""The retrain policy loop on the real broker: drift topic in, retrain topic out."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from confluent_kafka import Consumer, KafkaError, Message, Producer

from loopline.config.kafka import consumer_config, producer_config
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


def produce(settings: Settings, topic: str, values: list[bytes], key: bytes = b"fraud") -> None:
    producer = Producer(producer_config(settings.kafka))
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    for value in values:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures[:1]


def read(settings: Settings, topic: str, expect: int, wait_s: float = DEADLINE_S) -> list[Message]:
    """Messages of ``topic`` from the beginning; waits for ``expect``, then a little more."""
    consumer = Consumer(consumer_config(settings.kafka, f"reader-{time.monotonic_ns()}"))
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + wait_s
    settle = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
            if len(out) >= expect and settle is None:
                settle = time.monotonic() + 1.0  # anything beyond expect shows up too
            if settle is not None and time.monotonic() > settle:
                break
    finally:
        consumer.close()
    return out


def drift_event(i: int, severity: str = "critical") -> DriftEvent:
    return DriftEvent(
        id=f"de-{i}",
        time_ms=int(time.time() * 1000),
        kind="concept",
        detector="adwin(binary)",
        feature="error",
        statistic_before=0.1,
        statistic_after=0.32,
        window_before=5000,
        window_after=180,
        model_version="1",
        severity=severity,
    )


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
    [message] = read(settings, topics.retrain, expect=1)
    event = decode(RetrainEvent, message.value())
    assert message.key() == b"fraud"
    assert event.trigger == "drift" and event.drift_event_ids == ["de-1"]
    assert event.id.startswith("drift-fraud-")
    assert loop.emitted == [event]
    samples = loop.metrics.registry.get_sample_value
    assert samples("loopline_policy_retrain_events_total", {"trigger": "drift",
                                                           "result": "delivered"}) == 1  # fmt: skip
    assert samples("loopline_policy_drift_events_total", {"decision": "invalid"}) == 1
    [letter] = read(settings, topics.dead_letters, expect=1)
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
    assert len(read(settings, topics.retrain, expect=1)) == 1
