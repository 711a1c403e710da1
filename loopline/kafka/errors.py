"""Which Kafka client errors pass on their own (retry) and which say the request is wrong."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

# The broker is unreachable or slow: a restart, a network blip, a busy machine.
UNREACHABLE = frozenset(
    {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}
)
# A partition's leadership is moving (a broker restart, a broker fenced for a moment).
LEADERSHIP = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


def error_of(e: KafkaException) -> KafkaError | None:
    err = e.args[0] if e.args else None
    return err if isinstance(err, KafkaError) else None


def unreachable(e: KafkaException) -> bool:
    """Whether ``e`` says the broker is unreachable or slow, not that the request is wrong.

    >>> unreachable(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    True
    >>> unreachable(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    False
    """
    err = error_of(e)
    return err is not None and err.code() in UNREACHABLE


def transient(e: KafkaException) -> bool:
    """Whether retrying ``e`` a little later may succeed: unreachable, leadership moving,
    or an error the client itself marks retriable.

    >>> transient(KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)))
    True
    >>> transient(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    False
    """
    err = error_of(e)
    return err is not None and (
        err.retriable() or err.code() in UNREACHABLE or err.code() in LEADERSHIP
    )
