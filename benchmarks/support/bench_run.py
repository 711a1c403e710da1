"""A benchmark's private corner of the local stack, removed at the end.

Topics and Redis keys carry a unique tag, so a run never touches the data of
``loopline up``'s own services or of another run.
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from loopline.config.loader import load_settings
from loopline.contracts.redis_layout import RedisLayout, pack
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.demo.config import write_toml
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.stack import delete_topics, ensure_topics
from support.clients import N_CARDS, N_MERCHANTS


@dataclass(frozen=True)
class BenchRun:
    """Settings on the run's topics, its Redis key prefix (``tag``) and scratch directory."""

    settings: Settings
    topics: Topics
    tag: str
    work: Path
    store: redis.Redis

    @staticmethod
    def start() -> BenchRun:
        """Create the run's topics; exits with a hint when Kafka is down."""
        settings = load_settings()
        tag = f"bench{uuid.uuid4().hex[:8]}"
        topics = Topics(f"{tag}.")
        settings = replace(settings, kafka=replace(settings.kafka, topic_prefix=topics.prefix))
        try:
            ensure_topics(settings, topics)
        except Exception as e:
            raise SystemExit(f"Kafka is not reachable ({e}); start the stack: loopline up") from e
        work = Path(tempfile.mkdtemp(prefix="loopline-bench-"))
        store = redis.Redis(host=settings.redis.host, port=settings.redis.port, socket_timeout=10)
        return BenchRun(settings, topics, tag, work, store)

    @property
    def layout(self) -> RedisLayout:
        return RedisLayout(self.tag)

    def write_features(self, now: float | None = None) -> None:
        """Packed features of N_CARDS cards and N_MERCHANTS merchants, as the features flow
        writes them at ``now`` (default: the current time): the fraud example's feature
        set, values from :func:`feature_rows`."""
        fs = load_project(builtin_example()).feature_set()
        now = time.time() if now is None else now
        pipe = self.store.pipeline(transaction=False)
        for entity, rows in feature_rows(fs, now).items():
            for entity_id, vals in rows:
                pipe.set(self.layout.feature_key(fs, entity, entity_id), pack(now, vals), ex=3600)
        pipe.execute()

    def server_config(
        self,
        registry_root: Path,
        *,
        processes: int,
        threads: int,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> Path:
        """The server's TOML: the run's topics, Redis keys and registry, ephemeral ports,
        no registry poll (the server follows announcements); ``overrides`` add sections."""
        s = self.settings
        sections: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": s.kafka.bootstrap_servers,
                "topic_prefix": s.kafka.topic_prefix,
            },
            "redis": {"host": s.redis.host, "port": s.redis.port},
            "streams": {"redis_key_prefix": self.tag},
            "registry": {"path": registry_root},
            "serving": {
                "port": 0,
                "metrics_port": 0,
                "processes": processes,
                "threads": threads,
                "registry_poll_s": 0,
            },
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        path = self.work / "loopline.toml"
        write_toml(path, sections)
        return path

    def remove(self) -> None:
        """Delete the run's Redis keys and topics (a failed topic deletion is only reported)."""
        keys = list(self.store.scan_iter(match=f"{self.tag}:*", count=5000))
        for i in range(0, len(keys), 5000):
            self.store.delete(*keys[i : i + 5000])
        try:
            delete_topics(self.settings, self.topics.all(), timeout_s=20)
        except Exception as e:
            print(f"(could not delete the benchmark topics: {e})")


def feature_rows(fs: FeatureSet, now: float) -> dict[str, list[tuple[str, list[float]]]]:
    """The benchmarks' feature values per entity: (id, values in view order) for cards
    c0..c{N_CARDS-1} and merchants m0..m{N_MERCHANTS-1}; the same on every call."""
    rng = random.Random(7)
    card_n = len(fs.view("card").aggregations)
    merchant_n = len(fs.view("merchant").aggregations)
    cards = [
        (f"c{i}", [float(rng.randrange(10)) for _ in range(card_n - 1)] + [now - 60])
        for i in range(N_CARDS)
    ]
    merchants = [
        (f"m{i}", [float(rng.randrange(50)) for _ in range(merchant_n)]) for i in range(N_MERCHANTS)
    ]
    return {"card": cards, "merchant": merchants}
