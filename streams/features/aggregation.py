"""Per-entity windowed aggregation for one shard of the entity space.

Pure logic (no dataflow engine): a :class:`FeatureShard` holds the
:class:`~loopline.featurecore.features.EntityState` of every entity hashed to it
(see :func:`loopline.streams.features.decoding.shard_of`), applies batches of updates
and returns the absolute values to write, one per touched entity and batch.

Why shards rather than one engine key per entity: per-key bookkeeping in the
engine costs more than the features themselves at tens of thousands of
entities, and timers per key scale worse still. A shard is one engine key; the
number of shards is fixed by configuration (not by the worker count), so each
entity's results are the same whatever the workers, processes or restarts.

Values stay current as windows slide. Each shard keeps an event clock (the
latest event time it has seen) and a heap of the times at which an entity's
values change with no new event (a tile leaving a window,
:meth:`EntityState.expires_at`). When the clock passes such a time the entity
is written again, valid at that time. Bound: a value reflects an expiry as
soon as the shard sees any event at or past it (with R events/s over S shards,
about every S/R seconds); an entity's stored ``valid_at`` never exceeds the
shard clock, so an out-of-order event can still be applied after a refresh
(it is written valid at the later of its entity's last event and last refresh).

An entity silent for ``evict_after_s`` of event time with empty windows is
dropped from state (its Redis value expires by TTL on the same horizon).

>>> from loopline.featurecore.sample import SAMPLE, event
>>> from loopline.contracts.redis_layout import RedisLayout, unpack
>>> shard = FeatureShard(SAMPLE.feature_set(), RedisLayout("demo"))
>>> rec = event(1, "c1", "i1", 10.0, 0)
>>> out = shard.apply([(0, "c1", 1_000_000, rec, 0, 0), (0, "c1", 1_030_000, rec, 0, 1)])
>>> [(w.key.rsplit(":", 2)[-2:], w.valid_at, w.oldest_ms) for w in out.writes]
[(['user', 'c1'], 1030.0, 1000000)]
>>> unpack(out.writes[0].value)[1][:2]  # 2 purchases, 20.0 in the last 10 min
(2.0, 20.0)
>>> # 11 minutes later another user's event moves the clock: c1's 10 min window empties.
>>> out = shard.apply([(0, "c2", 1_690_000, {**rec, "user_id": "c2"}, 0, 2)])
>>> sorted((w.key[-2:], w.valid_at) for w in out.writes)
[('c1', 1620.0), ('c2', 1690.0)]
>>> {w.key[-2:]: unpack(w.value)[1][:2] for w in out.writes}["c1"]
(0.0, 0.0)
"""

from __future__ import annotations

import heapq
import math
import pickle
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from loopline.contracts.errors import FeatureError
from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.featurecore.entity_state import EntityState
from loopline.featurecore.features import FeatureSet
from loopline.streams.features.decoding import EntityUpdate

SNAPSHOT_FORMAT = 1
_UNKNOWN = -1.0  # "not computed yet" for an expiry time (real ones are > 0)


class FeatureWrite(NamedTuple):
    """One entity's absolute values to store."""

    key: str
    value: bytes  # contracts.redis_layout.pack(valid_at, values)
    valid_at: float
    # Oldest event time (ms) among the events this write makes visible; 0 for
    # a refresh with no new event. Freshness is measured from it.
    oldest_ms: int


@dataclass
class ShardOutput:
    writes: list[FeatureWrite] = field(default_factory=list)
    # Updates the feature engine refused (input validation lets none through
    # in practice), with the error: they go to the dead-letter topic.
    rejected: list[tuple[EntityUpdate, str]] = field(default_factory=list)
    refreshed: int = 0
    evicted: int = 0


class FeatureShard:
    """The state of one shard: entities, event clock, expiry schedule."""

    def __init__(
        self,
        fs: FeatureSet,
        layout: RedisLayout,
        *,
        evict_after_s: float = 0.0,
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        self.fs = fs
        self._views = fs.views
        self._view_index = {id(v): i for i, v in enumerate(fs.views)}
        self._prefixes = tuple(layout.key_prefix(fs, v.entity) for v in fs.views)
        # The hash tag's closing brace on a Redis Cluster, else empty.
        self._suffix = layout.key_suffix
        # An event at t cannot make any window change before t + this.
        self._min_expiry_s = tuple(
            min((w.seconds - w.tile_s for w in v.windows), default=math.inf) for v in fs.views
        )
        self._evict_after_s = evict_after_s
        self.clock_ms = 0
        self._states: dict[str, EntityState] = {}
        # Time each entity's stored value is valid at (what was last written).
        self._as_of: dict[str, float] = {}
        # Expiry schedule: heap of (time, key); _due holds each key's live entry.
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        # Keys whose _due entry is their eviction (their windows are empty).
        self._evicting: set[str] = set()
        # Pickled entities, refreshed only for entities changed since the last
        # snapshot: a snapshot costs what changed, not the whole shard.
        self._blobs: dict[str, bytes] = {}
        # Changed entities -> when they last changed (monotonic s), oldest first.
        self._dirty: dict[str, float] = {}
        if snapshot is not None:
            self._restore(snapshot)

    def __len__(self) -> int:
        return len(self._states)

    def state(self, key: str) -> EntityState | None:
        return self._states.get(key)

    def apply(self, updates: list[EntityUpdate]) -> ShardOutput:
        """Apply a batch of updates; return one write per changed entity."""
        out = ShardOutput()
        states = self._states
        prefixes, suffix = self._prefixes, self._suffix
        # key -> [oldest event ms, view index]
        touched: dict[str, list[int]] = {}
        for upd in updates:
            vi, eid, t_ms, record, _partition, _offset = upd
            key = prefixes[vi] + eid + suffix
            st = states.get(key)
            fresh = st is None
            if fresh:
                st = EntityState(self._views[vi])
            try:
                st.update(record, t_ms / 1000.0)  # type: ignore[union-attr]
            except FeatureError as e:
                out.rejected.append((upd, str(e)))
                continue
            if fresh:
                states[key] = st  # type: ignore[assignment]
                self._as_of[key] = 0.0
            if t_ms > self.clock_ms:
                self.clock_ms = t_ms
            seen = touched.get(key)
            if seen is None:
                touched[key] = [t_ms, vi]
            elif t_ms < seen[0]:
                seen[0] = t_ms
        writes: dict[str, FeatureWrite] = {}
        due = self._due
        for key, (oldest, vi) in touched.items():
            st = states[key]
            as_of = max(st.last_time, self._as_of[key])
            writes[key] = FeatureWrite(key, pack(as_of, st.values(as_of)), as_of, oldest)
            self._as_of[key] = as_of
            self._touch(key)
            # New events only add expiries at or after oldest + this view's
            # shortest (window - tile): an earlier schedule stays valid (an
            # early entry is re-checked when it pops), so skip recomputing it.
            scheduled = due.get(key)
            if (
                scheduled is None
                or scheduled > oldest / 1000.0 + self._min_expiry_s[vi]
                or key in self._evicting
            ):
                self._schedule_next(key, st, as_of)
        self._refresh(writes, out)
        out.writes = list(writes.values())
        return out

    def _schedule_next(
        self, key: str, st: EntityState, as_of: float, when: float | None = _UNKNOWN
    ) -> None:
        if when is _UNKNOWN:
            when = st.expires_at(as_of)
        self._evicting.discard(key)
        if when is None:
            if not self._evict_after_s:
                self._due.pop(key, None)
                return
            when = st.last_time + self._evict_after_s
            self._evicting.add(key)
        if self._due.get(key) != when:
            self._due[key] = when
            heapq.heappush(self._heap, (when, key))

    def _refresh(self, writes: dict[str, FeatureWrite], out: ShardOutput) -> None:
        clock_s = self.clock_ms / 1000.0
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= clock_s:
            when, key = heapq.heappop(heap)
            if due.get(key) != when:
                continue  # superseded by a later schedule
            del due[key]
            st = self._states[key]
            as_of = self._as_of[key]
            if key in self._evicting:  # idle since last_time + evict_after_s
                self._evicting.discard(key)
                self._evict(key)
                out.evicted += 1
                continue
            if when <= as_of:
                # Written past it by a newer event meanwhile: schedule afresh.
                self._schedule_next(key, st, as_of)
                continue
            # ``when`` is the next change (or earlier: then this write is merely
            # redundant). Jump to the last change at or before the clock.
            t = when
            while (later := st.expires_at(t)) is not None and later <= clock_s:
                t = later
            prev = writes.get(key)
            oldest = prev.oldest_ms if prev is not None else 0
            writes[key] = FeatureWrite(key, pack(t, st.values(t)), t, oldest)
            self._as_of[key] = t
            self._touch(key)
            out.refreshed += 1
            self._schedule_next(key, st, t, later)

    def _evict(self, key: str) -> None:
        del self._states[key]
        del self._as_of[key]
        self._blobs.pop(key, None)
        self._dirty.pop(key, None)

    # -- recovery ---------------------------------------------------------------
    def _touch(self, key: str) -> None:
        dirty = self._dirty
        if key in dirty:
            del dirty[key]  # re-insert: the dict stays ordered by last change
        dirty[key] = time.monotonic()

    def prepickle(self, quiet_s: float = 1.0, budget: int = 2000) -> int:
        """Pickle up to ``budget`` entities unchanged for ``quiet_s``; returns how many.

        Called between batches so that the snapshot at an epoch's end has only
        the most recent changes left to pickle: pickling every changed entity
        there stalled the flow for a third of a second at 20k entities. An
        entity changed again later is simply pickled again.
        """
        dirty = self._dirty
        horizon = time.monotonic() - quiet_s
        done = 0
        while dirty and done < budget:
            key = next(iter(dirty))
            if dirty[key] > horizon:
                break
            del dirty[key]
            self._pickle(key)
            done += 1
        return done

    def _pickle(self, key: str) -> None:
        state = self._states[key].__getstate__()
        vi = self._view_index[id(state.pop("view"))]
        self._blobs[key] = pickle.dumps(
            (vi, state, self._as_of[key]), protocol=pickle.HIGHEST_PROTOCOL
        )

    def snapshot(self) -> dict[str, Any]:
        """An immutable, picklable copy of the shard (only changes are re-pickled)."""
        for key in self._dirty:
            self._pickle(key)
        self._dirty.clear()
        return {
            "format": SNAPSHOT_FORMAT,
            "fingerprint": self.fs.fingerprint,
            "clock_ms": self.clock_ms,
            "entities": dict(self._blobs),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        if snap.get("format") != SNAPSHOT_FORMAT or snap.get("fingerprint") != self.fs.fingerprint:
            raise FeatureError(
                f"recovery state was written for another feature set or format "
                f"(fingerprint {str(snap.get('fingerprint'))[:12]}, format {snap.get('format')}); "
                f"this flow computes {self.fs.name} v{self.fs.version} "
                f"({self.fs.fingerprint[:12]}): start it with a fresh recovery directory"
            )
        self.clock_ms = snap["clock_ms"]
        first = next(iter(snap["entities"]), None)
        if first is not None and (first.endswith("}") and ":{" in first) != bool(self._suffix):
            # Keys name Redis keys: restoring them would write the other layout's keys.
            was = "a Redis Cluster" if self._suffix == "" else "a single Redis"
            raise FeatureError(
                f"recovery state was written for {was} (key {first!r}); redis.cluster "
                "changed since: start the flow with a fresh recovery directory"
            )
        for key, blob in snap["entities"].items():
            vi, state, as_of = pickle.loads(blob)
            state["view"] = self._views[vi]
            st = EntityState.__new__(EntityState)
            st.__setstate__(state)
            self._states[key] = st
            self._as_of[key] = as_of
            self._blobs[key] = blob
            self._schedule_next(key, st, as_of)
