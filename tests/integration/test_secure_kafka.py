"""The secure broker of `loopline up --secure`: TLS, SCRAM logins and per-service ACLs.

One real broker for the module (tests/secure_kafka_support.py), on its own
ports and state dir; no mocks.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from secure_kafka_support import SecureBroker, secure_broker

from loopline.config.kafka import admin_config, consumer_config, producer_config
from loopline.contracts.errors import DeliveryError
from loopline.contracts.settings import Settings
from loopline.kafka.checked_producer import CheckedProducer

pytestmark = pytest.mark.integration
# Errors and refusals the tests saw: none may quote a password.
SEEN: list[str] = []


@pytest.fixture(scope="module")
def broker(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureBroker]:
    with secure_broker(stack_settings, tmp_path_factory.mktemp("secure-kafka")) as b:
        print(f"secure broker up in {b.started_in_s:.1f} s", file=sys.stderr)
        yield b


def _producer(settings: Settings) -> CheckedProducer:
    return CheckedProducer(producer_config(settings.kafka), flush_timeout_s=15.0)


def _read_one(settings: Settings, group: str, topic: str, wait_s: float = 20.0) -> bytes:
    """The first message of ``topic`` (partition 0), read in consumer group ``group``."""
    consumer = Consumer(consumer_config(settings.kafka, f"{group}{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                SEEN.append(str(msg.error()))
                raise KafkaException(msg.error())
            return msg.value()
    finally:
        consumer.close()
    raise AssertionError(f"nothing read from {topic} within {wait_s:g} s")


def test_a_plaintext_client_is_refused(broker: SecureBroker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.address, "socket.timeout.ms": 2000})
    with pytest.raises(KafkaException) as refused:
        admin.list_topics(timeout=3)
    SEEN.append(str(refused.value))


def test_a_wrong_scram_password_is_refused(broker: SecureBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    kafka = replace(broker.settings_of("features").kafka, sasl_password_file=wrong)
    errors: list[KafkaError] = []
    admin = AdminClient(admin_config(kafka, error_cb=errors.append))
    with pytest.raises(KafkaException) as refused:
        admin.list_topics(timeout=3)
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        admin.poll(0.2)  # serves error_cb
    SEEN.append(str(refused.value))
    SEEN.extend(map(str, errors))
    assert [e.code() for e in errors][:1] == [KafkaError._AUTHENTICATION], errors
    assert "invalid credentials" in errors[0].str()
    assert not any("not-the-password" in text for text in SEEN)


def test_features_reads_its_events_and_writes_dead_letters(broker: SecureBroker) -> None:
    events, dead = broker.topics.named("events"), broker.topics.dead_letters
    _producer(broker.settings_of("producer")).send_and_wait(events, b'{"e": 1}', key="card-1")
    features = broker.settings_of("features")
    assert _read_one(features, "features-test-", events) == b'{"e": 1}'
    _producer(features).send_and_wait(dead, b"bad input", key="card-1")
    assert _read_one(broker.settings_of("admin"), "check-", dead) == b"bad input"


def test_features_cannot_write_model_updates(broker: SecureBroker) -> None:
    with pytest.raises(DeliveryError) as refused:
        _producer(broker.settings_of("features")).send_and_wait(
            broker.topics.model_updates, b"forged model", key="fraud"
        )
    SEEN.append(str(refused.value))
    assert "authoriz" in str(refused.value).lower(), refused.value


def test_features_cannot_read_outside_its_topics(broker: SecureBroker) -> None:
    features = broker.settings_of("features")
    consumer = Consumer(consumer_config(features.kafka, f"features-test-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([broker.topics.predictions])
    deadline = time.monotonic() + 20
    try:
        error = None
        while error is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            error = None if msg is None else msg.error()
    finally:
        consumer.close()
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    SEEN.append(str(error))


def test_serve_reads_model_updates(broker: SecureBroker) -> None:
    updates = broker.topics.model_updates
    _producer(broker.settings_of("rollout")).send_and_wait(updates, b"fraud@2", key="fraud")
    assert _read_one(broker.settings_of("serve"), "serving-", updates) == b"fraud@2"


def test_labels_writes_labeled_examples_in_transactions(broker: SecureBroker) -> None:
    labeled = broker.topics.labeled
    conf = producer_config(broker.settings_of("labels").kafka)
    conf["transactional.id"] = f"{labeled}.labels-writer-0"
    producer = Producer(conf)
    producer.init_transactions(15)
    producer.begin_transaction()
    producer.produce(labeled, b"example", key=b"card-1", partition=0)
    producer.commit_transaction(15)
    assert _read_one(broker.settings_of("drift"), "drift-test-", labeled) == b"example"


def test_the_policy_reads_its_history_and_counts_rows_with_its_own_login(
    broker: SecureBroker,
) -> None:
    """The components' own readers (private groups, offset lookups) pass the ACLs."""
    from loopline.trainer.kafka_io import read_history
    from loopline.trainer.policy.service import KafkaRowCounter

    retrain, labeled = broker.topics.retrain, broker.topics.labeled
    _producer(broker.settings_of("policy")).send_and_wait(retrain, b"retrain fraud", key="fraud")
    policy = broker.settings_of("policy").kafka
    assert list(read_history(policy, retrain, timeout_s=20)) == [b"retrain fraud"]
    _producer(broker.settings_of("labels")).send_and_wait(labeled, b"example", key="card-2")
    counter = KafkaRowCounter(policy, labeled)
    try:
        assert counter(0) >= 1
    finally:
        counter.close()


def test_no_password_in_the_broker_logs_or_errors(broker: SecureBroker) -> None:
    with pytest.raises(DeliveryError) as refused:  # one refusal even when run alone
        _producer(broker.settings_of("producer")).send_and_wait(broker.topics.drift, b"x")
    SEEN.append(str(refused.value))
    logs = broker.logs()
    assert "StandardAuthorizer" in logs  # the broker's log really was read
    for password in broker.passwords():
        assert password not in logs
        assert not any(password in text for text in SEEN)
    assert (broker.paths.kafka_properties.stat().st_mode & 0o077) == 0


def test_ssl_with_a_client_certificate_logs_in_as_its_common_name(broker: SecureBroker) -> None:
    """Plain SSL: the certificate is the login, the same per-service ACLs apply."""
    features = broker.ssl_settings_of("features")
    _producer(features).send_and_wait(broker.topics.dead_letters, b"by certificate")
    with pytest.raises(DeliveryError, match="uthoriz") as refused:
        _producer(features).send_and_wait(broker.topics.model_updates, b"not features' topic")
    SEEN.append(str(refused.value))


def test_ssl_without_a_client_certificate_is_refused(broker: SecureBroker) -> None:
    kafka = replace(broker.ssl_settings_of("features").kafka, ssl_cert_file=None, ssl_key_file=None)
    admin = AdminClient(admin_config(kafka, **{"socket.timeout.ms": 2000}))
    with pytest.raises(KafkaException) as refused:
        admin.list_topics(timeout=3)
    SEEN.append(str(refused.value))
