"""librdkafka configurations every Loopline client starts from.

Tuned for latency: the client defaults (``fetch.wait.max.ms`` 500,
``linger.ms`` 5) cost hundreds of milliseconds end to end.

>>> from loopline.contracts.settings import KafkaSettings
>>> producer_config(KafkaSettings())["enable.idempotence"]
True
>>> consumer_config(KafkaSettings(), "features")["group.id"]
'loopline-features'
>>> admin_config(KafkaSettings())
{'bootstrap.servers': '127.0.0.1:19092'}

With ``kafka.security_protocol`` set, every client (producer, consumer,
admin) gets the same TLS and SASL settings, so security is configured once.
"""

from __future__ import annotations

from typing import Any

from loopline.contracts.settings import KafkaSettings
from loopline.security.secrets import read_secret


def security_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka's security properties for ``kafka`` (empty for PLAINTEXT)."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    conf: dict[str, Any] = {"security.protocol": kafka.security_protocol}
    if kafka.ssl_ca_file is not None:
        conf["ssl.ca.location"] = str(kafka.ssl_ca_file)
    if kafka.ssl_cert_file is not None:
        conf["ssl.certificate.location"] = str(kafka.ssl_cert_file)
    if kafka.ssl_key_file is not None:
        conf["ssl.key.location"] = str(kafka.ssl_key_file)
    if kafka.security_protocol == "SASL_SSL":
        assert kafka.sasl_password_file is not None  # KafkaSettings checks it
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username
        conf["sasl.password"] = read_secret(kafka.sasl_password_file, "kafka.sasl_password_file")
    return conf


def admin_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """An admin client (topics, partitions, ACLs) with the same security as the rest."""
    conf: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers}
    conf.update(security_config(kafka))
    conf.update(overrides)
    return conf


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """A producer that waits for the broker's acknowledgement and never duplicates on retry."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "linger.ms": kafka.linger_ms,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
    }
    conf.update(security_config(kafka))
    conf.update(overrides)
    return conf


# How long a group waits for a member that stopped heartbeating before handing its
# partitions to another: how long a service killed -9 and restarted at once may sit
# idle. 10 s was tried (benchmarks/chaos.py trainer_kill): no measurable gain, and on
# a saturated machine heartbeats ran late and healthy members were thrown out of
# their groups, so librdkafka's default (45 s) stays, said here explicitly.
SESSION_TIMEOUT_MS = 45_000


def consumer_config(kafka: KafkaSettings, group: str, **overrides: Any) -> dict[str, Any]:
    """A consumer in group ``<consumer_group_prefix><group>`` reading committed data only."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": f"{kafka.consumer_group_prefix}{group}",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }
    conf.update(security_config(kafka))
    conf.update(overrides)
    return conf
