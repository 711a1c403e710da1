"""`simulate` puts exactly the generator's stream on Kafka, every delivery acknowledged."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from loopline.contracts.schemas import Outcome, Transaction, decode, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.streams.simulator import Simulator, SimulatorConfig


def _read_all(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "unused",
            "enable.partition.eof": True,
        }
    )
    parts = settings.topics.partitions
    c.assign([TopicPartition(topic, p, -2) for p in range(parts)])
    out, ended = [], set()
    deadline = time.monotonic() + 60
    while len(ended) < parts and time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            ended.add(msg.partition())
            continue
        out.append((msg.key(), msg.value()))
    c.close()
    return out


def test_simulate_produces_the_generators_stream(
    isolated_settings: Settings, topics: Topics
) -> None:
    args = ["--seed", "5", "--start", "1700000000000", "--duration", "20", "--rate", "150"]
    args += ["--fraud-rate", "0.05", "--outcome-delay", "3", "--speed", "0", "--quiet"]
    env = dict(os.environ)
    env["LOOPLINE_KAFKA__BOOTSTRAP_SERVERS"] = isolated_settings.kafka.bootstrap_servers
    env["LOOPLINE_KAFKA__TOPIC_PREFIX"] = isolated_settings.kafka.topic_prefix
    done = subprocess.run(
        [sys.executable, "-m", "loopline.streams", "simulate", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = list(
        Simulator(
            SimulatorConfig(
                seed=5,
                start_ms=1_700_000_000_000,
                duration_s=20,
                rate=150,
                fraud_rate=0.05,
                outcome_delay_s=3,
            )
        ).transactions()
    )
    assert f"produced {len(expected)} transactions" in done.stdout
    events = _read_all(isolated_settings, topics.events)
    outcomes = _read_all(isolated_settings, topics.outcomes)
    assert sorted(events) == sorted(
        (s.transaction.card_id.encode(), encode(s.transaction)) for s in expected
    )
    assert sorted(outcomes) == sorted(
        (s.transaction.event_id.encode(), encode(s.outcome)) for s in expected
    )
    # Payloads are valid for every consumer of the contracts.
    decode(Transaction, events[0][1])
    decode(Outcome, outcomes[0][1])
