"""librdkafka configurations every Loopline client starts from.

Tuned for latency: the client defaults (``fetch.wait.max.ms`` 500,
``linger.ms`` 5) cost hundreds of milliseconds end to end.

>>> from loopline.contracts.settings import KafkaSettings
>>> producer_config(KafkaSettings())["enable.idempotence"]
True
>>> consumer_config(KafkaSettings(), "features")["group.id"]
'loopline-features'
"""

from __future__ import annotations

from typing import Any

from loopline.contracts.settings import KafkaSettings


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
    conf.update(overrides)
    return conf


def consumer_config(kafka: KafkaSettings, group: str, **overrides: Any) -> dict[str, Any]:
    """A consumer in group ``<consumer_group_prefix><group>`` reading committed data only."""
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": f"{kafka.consumer_group_prefix}{group}",
        "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }
    conf.update(overrides)
    return conf
