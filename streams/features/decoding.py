"""From Kafka records to feature updates: parse, validate, deduplicate, gate on lateness, route.

Pure logic (no Kafka client, no dataflow engine): the source adapter hands a
batch of :class:`SourceRecord` from one partition to that partition's
:class:`EventDecoder` and gets back the accepted events grouped by shard plus
the dead letters. Nothing raises on bad input: every record ends up
accepted, skipped as a duplicate, or in a :class:`DeadLetter` with its
original bytes and origin.

Lateness is judged per Kafka partition, against the partition's stream time
(the highest event time seen on it, Kafka Streams style). The verdict then
depends only on the partition's order, never on worker count, process count
or restarts, and the stream time is snapshotted together with the offset.

Duplicates are judged per partition too: the ids of the partition's last
``dedup_window`` accepted events (:class:`RecentIds`) are kept, snapshotted
with the offset, and an event whose id is among them is skipped and counted
(``duplicates``), neither aggregated nor dead-lettered. A producer re-sending
what it had in flight (an idempotent producer's epoch bump) lands the copy on
the same partition (same key) a few thousand offsets later; a copy further
than the window, or on another partition, is counted again.

>>> from loopline.featurecore.sample import PURCHASES, SAMPLE
>>> dec = EventDecoder(SAMPLE.feature_set(), EventParser(PURCHASES), shards=4,
...                    allowed_lateness_s=60)
>>> good = (b'{"event_id":"e1","user_id":"u1","item_id":"i1","price":5,'
...         b'"event_time":1700000000000}')
>>> late = good.replace(b"1700000000000", b"1699999000000").replace(b'"e1"', b'"e2"')
>>> batch = dec.decode([
...     SourceRecord("ev", 0, 7, b"c1", good),
...     SourceRecord("ev", 0, 8, b"c1", late),
...     SourceRecord("ev", 0, 9, None, b"{oops"),
... ])
>>> batch.accepted, [(d.offset, d.reason) for d in batch.dead_letters]
(1, [(8, 'late'), (9, 'malformed')])
>>> sorted(len(items) for items in batch.by_shard.values())  # one user update, one item update
[1, 1]
>>> again = dec.decode([SourceRecord("ev", 0, 12, b"c1", good)])  # e1 re-sent by its producer
>>> again.accepted, again.duplicates, again.dead_letters  # skipped: not counted, not a dead letter
(0, 1, [])
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.schemas import DeadLetter
from loopline.contracts.settings import StreamsSettings
from loopline.featurecore.event_schema import EventParser, MalformedEventError
from loopline.featurecore.features import FeatureSet
from loopline.streams.common.records import SourceRecord, dead_letter_of

REASON_MALFORMED = "malformed"
REASON_INVALID = "invalid"
REASON_LATE = "late"


# An accepted update for one entity: (view index, entity id, event time ms,
# the event record, source partition, source offset). A plain tuple: these are
# the items that cross workers, so they must be cheap to build and to pickle.
EntityUpdate = tuple[int, str, int, dict[str, Any], int, int]


def shard_of(entity_key: str, shards: int) -> int:
    """Stable shard of an entity: the same in every process and every run."""
    return zlib.crc32(entity_key.encode()) % shards


@dataclass
class PartitionClock:
    """Stream time of one partition: the highest event time seen on it.

    An event older than ``stream time - allowed lateness`` is late.

    >>> clock = PartitionClock(lateness_ms=1000)
    >>> [clock.admit(t) for t in (5000, 4500, 3999, 4000, 9000, 7999)]
    [True, True, False, True, True, False]
    """

    lateness_ms: int
    max_ms: int = 0

    def admit(self, t_ms: int) -> bool:
        if t_ms > self.max_ms:
            self.max_ms = t_ms
            return True
        return t_ms >= self.max_ms - self.lateness_ms

    @property
    def watermark_ms(self) -> int:
        return self.max_ms - self.lateness_ms


# A RecentIds window as snapshotted: its string ids NUL-joined, or a tuple of them.
IdsSnapshot = str | tuple[Hashable, ...]
_ID_SEPARATOR = "\x00"


class RecentIds:
    """The ids of one partition's last ``size`` accepted events, oldest first.

    A set answers "seen?" and a deque remembers the order the ids leave in;
    both hold the same ids (an id is only added when absent), so memory is
    bounded by ``size`` whatever the traffic. ``size`` 0 keeps nothing.

    >>> w = RecentIds(2, ["a"])
    >>> w.add("b"); w.add("c")  # "a" leaves the window
    >>> [i in w for i in "abc"], w.snapshot()
    ([False, True, True], 'b\\x00c')
    >>> sorted(RecentIds.restore(2, w.snapshot()).ids), RecentIds(3, [7, 8]).snapshot()
    (['b', 'c'], (7, 8))
    """

    __slots__ = ("ids", "order", "size")

    def __init__(self, size: int, ids: Iterable[Hashable] = ()) -> None:
        if size < 0:
            raise ConfigError(f"dedup window must be >= 0 ids, not {size}")
        self.size = size
        # A restored window larger than today's size keeps only its newest ids.
        self.order: deque[Hashable] = deque(ids, maxlen=size)
        self.ids: set[Hashable] = set(self.order)

    def __contains__(self, event_id: Hashable) -> bool:
        return event_id in self.ids

    def __len__(self) -> int:
        return len(self.order)

    def add(self, event_id: Hashable) -> None:
        """Remember an id not already in the window (the oldest leaves when full)."""
        if not self.size:
            return
        if len(self.order) >= self.size:
            self.ids.discard(self.order.popleft())
        self.order.append(event_id)
        self.ids.add(event_id)

    def snapshot(self) -> IdsSnapshot:
        """The ids, oldest first, as a copy (later adds do not change it).

        String ids are joined with NUL into one string: 100,000 of them pickle
        in ~3 ms that way, ~14 ms as a tuple. Other ids (an integer event id
        field), or strings holding a NUL, stay a tuple.
        """
        order = self.order
        if not order:
            return ()
        try:
            joined = _ID_SEPARATOR.join(order)  # type: ignore[arg-type]
        except TypeError:
            return tuple(order)
        if joined.count(_ID_SEPARATOR) != len(order) - 1:
            return tuple(order)
        return joined

    @classmethod
    def restore(cls, size: int, snapshot: IdsSnapshot) -> RecentIds:
        """The window :meth:`snapshot` saved, in a window of ``size`` ids."""
        ids = snapshot.split(_ID_SEPARATOR) if isinstance(snapshot, str) else snapshot
        return cls(size, ids)


@dataclass
class DecodedBatch:
    """What one partition's batch became."""

    by_shard: dict[int, list[EntityUpdate]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    records: int = 0
    # Skipped: the id of an event this partition accepted recently (not dead-lettered).
    duplicates: int = 0


class EventDecoder:
    """Parse, validate, deduplicate, judge lateness and route one partition's records.

    Keep one per partition; its :attr:`clock` and :attr:`recent` are the state
    to snapshot with the partition's offset (``clock_ms`` and ``recent_ids``,
    a :meth:`RecentIds.snapshot`, restore them). The ids of the last
    ``dedup_window`` accepted events are remembered; 0 turns deduplication off.
    """

    def __init__(
        self,
        fs: FeatureSet,
        parser: EventParser,
        *,
        shards: int,
        allowed_lateness_s: float,
        max_future_s: float = 0.0,
        clock_ms: int = 0,
        dedup_window: int = StreamsSettings.dedup_window,
        recent_ids: IdsSnapshot = (),
    ) -> None:
        if shards < 1:
            raise ConfigError("shards must be >= 1")
        self.fs = fs
        self.shards = shards
        self.parser = parser
        self.clock = PartitionClock(int(allowed_lateness_s * 1000), clock_ms)
        self.recent = RecentIds.restore(dedup_window, recent_ids)
        self.max_future_ms = int(max_future_s * 1000)
        # (view index, entity name, key field(s)) of each view this source feeds
        source = parser.source.name
        self._views = tuple(
            (i, v.entity + ":", v.key_field if len(v.key_fields) == 1 else v.key_fields)
            for i, v in enumerate(fs.views)
            if v.source is None or v.source == source
        )
        if not self._views:
            raise ConfigError(f"no feature view of {fs.name} reads source {source!r}")
        self._shard_cache: dict[str, int] = {}

    def decode(self, records: list[SourceRecord], now_ms: int | None = None) -> DecodedBatch:
        out = DecodedBatch(records=len(records))
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        parse = self.parser.parse
        time_field = self.parser.time_field
        admit = self.clock.admit
        by_shard = out.by_shard
        shard_cache = self._shard_cache
        horizon = now_ms + self.max_future_ms if self.max_future_ms else 0
        # The window's containers, bound once: this loop runs per event.
        recent = self.recent
        seen, order, window = recent.ids, recent.order, recent.size
        id_field = self.parser.source.event_id
        for rec in records:
            try:
                record = parse(rec.value)
            except MalformedEventError as e:
                out.dead_letters.append(dead_letter_of(rec, REASON_MALFORMED, str(e), now_ms))
                continue
            except SchemaError as e:
                out.dead_letters.append(dead_letter_of(rec, REASON_INVALID, str(e), now_ms))
                continue
            # Duplicates before the time checks: a copy of an accepted event is
            # a duplicate, never "late" (the partition's clock has moved on since
            # the original; judging the copy late would flood the dead letters
            # with events counted once already). Only accepted ids enter the
            # window, so a copy of a dead-lettered event is judged again like
            # its original, and a corrected re-send of a refused one can pass.
            event_id = record[id_field]
            if event_id in seen:
                out.duplicates += 1
                continue
            t_ms = record[time_field]
            if horizon and t_ms > horizon:
                error = f"event time {t_ms} is more than {self.max_future_ms} ms ahead of {now_ms}"
                out.dead_letters.append(dead_letter_of(rec, REASON_INVALID, error, now_ms))
                continue
            if not admit(t_ms):
                error = (
                    f"event time {t_ms} is before the partition's watermark "
                    f"{self.clock.watermark_ms} (stream time {self.clock.max_ms} minus "
                    f"{self.clock.lateness_ms} ms allowed lateness)"
                )
                out.dead_letters.append(dead_letter_of(rec, REASON_LATE, error, now_ms))
                continue
            out.accepted += 1
            if window:  # RecentIds.add, inlined
                if len(order) >= window:
                    seen.discard(order.popleft())
                order.append(event_id)
                seen.add(event_id)
            for vi, entity, key_field in self._views:
                if key_field.__class__ is str:
                    eid = record[key_field]
                    if eid.__class__ is not str:
                        eid = str(eid)
                else:  # a composite key: the view's entity_id
                    eid = "|".join(str(record[f]) for f in key_field)
                ekey = entity + eid
                shard = shard_cache.get(ekey)
                if shard is None:
                    shard = shard_of(ekey, self.shards)
                    if len(shard_cache) < 1_000_000:
                        shard_cache[ekey] = shard
                item = (vi, eid, t_ms, record, rec.partition, rec.offset)
                bucket = by_shard.get(shard)
                if bucket is None:
                    by_shard[shard] = [item]
                else:
                    bucket.append(item)
        return out
