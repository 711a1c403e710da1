"""Creating, listing and deleting Loopline's topics on the broker.

The broker runs with ``auto.create.topics.enable=false``, so every topic a
component uses must be created here first (``loopline up`` does it for the
configured prefix; tests call :func:`ensure_topics` with a unique prefix).
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from loopline.config.kafka import admin_config
from loopline.contracts.errors import StackError
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics, TopicSpec


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(admin_config(settings.kafka))


def _metadata(admin: AdminClient, timeout_s: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise StackError(f"Kafka metadata request failed: {e.args[0]}") from e


def existing_topics(settings: Settings, *, timeout_s: float = 10.0) -> set[str]:
    """Names of the topics on the broker, internal ones (``__*``) left out."""
    metadata = _metadata(admin_client(settings), timeout_s)
    return {name for name in metadata.topics if not name.startswith("__")}


def _ready(metadata: ClusterMetadata, spec: TopicSpec) -> bool:
    """Created and every partition has a leader (so producers can write at once)."""
    topic = metadata.topics.get(spec.name)
    if topic is None or topic.error is not None:
        return False
    return len(topic.partitions) >= spec.partitions and all(
        p.leader >= 0 for p in topic.partitions.values()
    )


def ensure_topics(
    settings: Settings, topics: Topics | None = None, *, timeout_s: float = 60.0
) -> list[str]:
    """Create the topics of ``topics`` (default: the configured prefix) that are missing.

    Idempotent: existing topics are left as they are. Returns the names this
    call created. Returns only once every topic has a leader on every partition.
    """
    from loopline.featurerepo.loader import project_of

    topics = topics or Topics(settings.kafka.topic_prefix)
    specs = topics.specs(settings.topics, project_of(settings).topics())
    admin = admin_client(settings)
    created: list[str] = []
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while True:
        metadata = _metadata(admin, max(1.0, deadline - time.monotonic()))
        missing = [s for s in specs if s.name not in metadata.topics]
        if not missing and all(_ready(metadata, s) for s in specs):
            return created
        if missing:
            new = [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=settings.topics.replication_factor,
                    config=dict(s.config),
                )
                for s in missing
            ]
            futures = admin.create_topics(new, operation_timeout=30, request_timeout=30)
            for name, future in futures.items():
                try:
                    future.result()
                    created.append(name)
                except KafkaException as e:
                    error: KafkaError = e.args[0]
                    if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue  # created meanwhile by someone else: fine
                    if not error.retriable():
                        raise StackError(f"cannot create topic {name}: {error.str()}") from e
                    last_error = f"{name}: {error.str()}"
        if time.monotonic() >= deadline:
            raise StackError(
                f"topics not ready within {timeout_s:.0f} s "
                f"(missing {[s.name for s in missing]}) {last_error}".rstrip()
            )
        time.sleep(0.1)


def delete_topics(settings: Settings, names: list[str], *, timeout_s: float = 30.0) -> None:
    """Delete ``names``; topics already gone are fine."""
    if not names:
        return
    # Keep the client referenced until the futures resolve: a collected
    # AdminClient fails its pending requests with _DESTROY.
    admin = admin_client(settings)
    futures = admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as e:
            error: KafkaError = e.args[0]
            if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise StackError(f"cannot delete topic {name}: {error.str()}") from e
