"""Online feature lookup: keys, one store round trip, per-entity status, last-known values.

Pure logic over a :class:`~loopline.serving.feature_store.FeatureStore`; it
knows the feature set and the Redis layout, not the transport.

>>> from loopline.featurecore.sample import SAMPLE
>>> plan = LookupPlan(SAMPLE.feature_set(), key_prefix="ll")
>>> plan.key_fields
('user_id', 'item_id')
>>> plan.entity_ids({"user_id": "u1", "item_id": "i9"})
['u1', 'i9']
>>> plan.request_fields
('price',)
>>> statuses = plan.feature_statuses((FeatureStatus.OK, FeatureStatus.MISSING))
>>> [s.value for s in statuses]  # item.buys_1h depends on the unknown item
['ok', 'ok', 'ok', 'missing', 'ok', 'ok']
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from loopline.contracts.errors import FeatureError
from loopline.contracts.redis_layout import RedisLayout, unpack
from loopline.featurecore.features import FeatureSet
from loopline.serving.feature_store import FeatureStore, StoreUnavailableError


class FeatureStatus(enum.Enum):
    """How a feature value was obtained (worst first in :data:`SEVERITY`)."""

    OK = "ok"
    MISSING = "missing"
    STALE = "stale"
    DEFAULTED = "defaulted"


# When a feature depends on several entities, the worst status wins.
SEVERITY = {
    FeatureStatus.OK: 0,
    FeatureStatus.STALE: 1,
    FeatureStatus.MISSING: 2,
    FeatureStatus.DEFAULTED: 3,
}


class EntityLookup(NamedTuple):
    """One entity of a request: its stored values (``None``: defaults) and status."""

    values: tuple[float, ...] | None
    status: FeatureStatus


class LastKnown:
    """Bounded memory of the latest value read per key, for when the store is down.

    Two generations: inserts go to the young one; when it is full it becomes
    the old one and the previous old one is dropped. O(1), at most
    ``capacity`` entries, and recently used keys survive.

    >>> lk = LastKnown(capacity=4)
    >>> for k in (b"a", b"b", b"c"):
    ...     lk.put(k, k * 8)
    >>> lk.get(b"a"), lk.get(b"z")
    (b'aaaaaaaa', None)
    """

    def __init__(self, capacity: int) -> None:
        self._half = max(1, capacity // 2)
        self._young: dict[bytes, bytes] = {}
        self._old: dict[bytes, bytes] = {}

    def put(self, key: bytes, raw: bytes) -> None:
        young = self._young
        young[key] = raw
        if len(young) >= self._half:
            self._old, self._young = young, {}

    def get(self, key: bytes) -> bytes | None:
        raw = self._young.get(key)
        return raw if raw is not None else self._old.get(key)

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


class LookupPlan:
    """Everything about a feature set that serving precomputes once."""

    def __init__(self, fs: FeatureSet, key_prefix: str, *, cluster: bool = False) -> None:
        self.fs = fs
        layout = RedisLayout(key_prefix, cluster=cluster)
        self.entities = tuple(v.entity for v in fs.views)
        # Every key field a request must carry, once each (views may share one).
        self.key_fields = tuple(dict.fromkeys(k for v in fs.views for k in v.key_fields))
        self._view_keys = tuple(v.key_fields for v in fs.views)
        self.key_prefixes = tuple(layout.key_prefix(fs, v.entity).encode() for v in fs.views)
        # After the id: the hash tag's closing brace on a Redis Cluster, else empty.
        self.key_suffix = layout.key_suffix.encode()
        self.sizes = tuple(len(v.aggregations) for v in fs.views)
        self.request_fields = _request_fields(fs)
        # For each model feature (feature-set order), the entity positions it reads.
        self.dependencies = _dependencies(fs, self.entities)

    def entity_ids(self, entities: Mapping[str, str]) -> list[str]:
        """Each view's entity id from a request's key fields (composite keys joined by "|")."""
        return [
            entities[keys[0]] if len(keys) == 1 else "|".join(entities[k] for k in keys)
            for keys in self._view_keys
        ]

    def keys(self, entity_ids: Sequence[str]) -> list[bytes]:
        s = self.key_suffix
        return [p + i.encode() + s for p, i in zip(self.key_prefixes, entity_ids, strict=True)]

    def feature_statuses(self, entity_status: Sequence[FeatureStatus]) -> list[FeatureStatus]:
        """Per model feature (feature-set order): the worst status of the entities it reads."""
        out = []
        for deps in self.dependencies:
            status = FeatureStatus.OK
            for i in deps:
                s = entity_status[i]
                if SEVERITY[s] > SEVERITY[status]:
                    status = s
            out.append(status)
        return out

    def decode(
        self,
        raws: Sequence[bytes | None],
        request_time_s: float,
        stale_after_s: float,
        last_known: LastKnown,
        keys: Sequence[bytes],
    ) -> list[EntityLookup]:
        """Turn one request's MGET replies (one per entity) into values and statuses."""
        out = []
        for raw, size, key in zip(raws, self.sizes, keys, strict=True):
            if raw is None:
                out.append(EntityLookup(None, FeatureStatus.MISSING))
                continue
            try:
                valid_at, values = unpack(raw, size)
            except FeatureError:
                # Not this layout (a foreign writer): unusable, so defaulted.
                out.append(EntityLookup(None, FeatureStatus.DEFAULTED))
                continue
            last_known.put(key, raw)
            stale = valid_at < request_time_s - stale_after_s
            out.append(EntityLookup(values, FeatureStatus.STALE if stale else FeatureStatus.OK))
        return out

    def fallback(self, keys: Sequence[bytes], last_known: LastKnown) -> list[EntityLookup]:
        """Values when the store cannot answer: last known, else defaults; all defaulted.

        ``keys`` holds one key per entity for one or several requests in a row.
        """
        n = len(self.sizes)
        return [self.fallback_one(key, i % n, last_known) for i, key in enumerate(keys)]

    def fallback_one(self, key: bytes, entity: int, last_known: LastKnown) -> EntityLookup:
        """One key's fallback (``entity``: its position in :attr:`entities`)."""
        raw = last_known.get(key)
        values = None
        if raw is not None:
            try:
                values = unpack(raw, self.sizes[entity])[1]
            except FeatureError:
                values = None
        return EntityLookup(values, FeatureStatus.DEFAULTED)


def fetch(
    store: FeatureStore,
    keys: list[bytes],
    timeout_s: float,
) -> tuple[list[bytes | None] | None, StoreUnavailableError | None]:
    """One MGET for ``keys``; on failure ``(None, error)`` instead of raising."""
    try:
        return store.mget(keys, timeout_s), None
    except StoreUnavailableError as e:
        return None, e


def _request_fields(fs: FeatureSet) -> tuple[str, ...]:
    names: list[str] = []
    for d in fs.derived:
        for arg in d.args:
            if "." not in arg and arg not in names:
                names.append(arg)
    return tuple(names)


def _dependencies(fs: FeatureSet, entities: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    position = {e: i for i, e in enumerate(entities)}
    derived: Mapping[str, tuple[str, ...]] = {d.name: d.args for d in fs.derived}
    out = []
    for name in fs.model_features:
        refs = derived.get(name, (name,))
        deps = sorted({position[r.split(".", 1)[0]] for r in refs if "." in r})
        out.append(tuple(deps))
    return tuple(out)
