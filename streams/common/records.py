"""What every flow's Kafka source reads: where a partition starts, the records it hands on.

Also how a record that cannot be used becomes a dead letter, so every flow's
letters carry the same fields.
"""

from __future__ import annotations

from typing import NamedTuple

from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import DeadLetter

# Where a partition with no recovery state starts (streams.start_from).
START_FROM = ("beginning", "end")


def check_start_from(start: str) -> None:
    """Refuse a ``streams.start_from`` no source knows."""
    if start not in START_FROM:
        raise ConfigError(f"streams.start_from must be 'beginning' or 'end', not {start!r}")


class SourceRecord(NamedTuple):
    """One Kafka message as read, before any parsing."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


def dead_letter_of(rec: SourceRecord, reason: str, error: str, time_ms: int) -> DeadLetter:
    """``rec`` refused for ``reason``, with its original bytes and position."""
    return DeadLetter.of(
        source_topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        reason=reason,
        error=error,
        value=rec.value,
        key=rec.key,
        time_ms=time_ms,
    )
