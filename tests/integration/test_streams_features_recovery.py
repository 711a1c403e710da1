"""The features flow on the real stack, run as real processes: restarts and parallelism.

Online values in Redis must equal the offline replay (``final_values``) over
the same events, byte for byte, after a ``kill -9`` mid-stream and a restart,
and whether one worker, two workers or two processes computed them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient
from features_support import (
    dead_letters,
    end_offsets,
    events,
    expected_store,
    features_flow,
    produce_events,
    stored,
)

from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics


def test_kill_9_mid_stream_then_restart_equals_one_clean_run(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    first, second = events(20_000, seed=2, part=(0, 2)), events(60_000, seed=3, part=(1, 2))
    recovery = str(tmp_path / "recovery")
    log = tmp_path / "flow.log"
    produce_events(isolated_settings, topics.events, first)
    flow = features_flow(isolated_settings, key_prefix, log, "--recovery-dir", recovery)
    expected_first = expected_store(first, key_prefix)
    flow.until(lambda: stored(redis_client, key_prefix) == expected_first, "the first part")
    time.sleep(2.5)  # at least one snapshot (interval 1 s) covers the first part
    first_end = end_offsets(isolated_settings, topics.events)
    # The second part arrives at a steady pace; the flow dies in the middle of it.
    producer = threading.Thread(
        target=produce_events, args=(isolated_settings, topics.events, second, 15_000.0)
    )
    producer.start()
    time.sleep(1.5)
    flow.kill9()
    producer.join()
    expected = expected_store(first + second, key_prefix)
    assert stored(redis_client, key_prefix) != expected, "the kill came too late to test anything"
    # Drop the first part from the topic: only a restart that really resumes from
    # its snapshot (state and offsets together) can still get every value right.
    admin = AdminClient({"bootstrap.servers": isolated_settings.kafka.bootstrap_servers})
    for future in admin.delete_records(first_end).values():
        future.result(30)

    features_flow(
        isolated_settings, key_prefix, log, "--recovery-dir", recovery, "--drain", "2"
    ).wait()

    assert stored(redis_client, key_prefix) == expected
    assert not dead_letters(isolated_settings, topics.dead_letters)


def test_two_workers_and_two_processes_equal_one_worker(
    isolated_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    stream = events(15_000, seed=4)
    produce_events(isolated_settings, topics.events, stream)
    runs = {
        "one": ("--workers", "1"),
        "two-workers": ("--workers", "2"),
        "two-processes": ("--processes", "2"),
    }
    stores = {}
    for name, args in runs.items():
        prefix = f"{key_prefix}-{name}"
        flow = features_flow(
            isolated_settings,
            prefix,
            tmp_path / f"{name}.log",
            *args,
            "--drain",
            "2",
            "--recovery-dir",
            str(tmp_path / f"recovery-{name}"),
        )
        flow.wait()
        store = stored(redis_client, prefix)
        stores[name] = {k[len(prefix) :]: v for k, v in store.items()}
        if store:
            redis_client.delete(*store)
    expected = {k[len(key_prefix) :]: v for k, v in expected_store(stream, key_prefix).items()}
    assert stores["one"] == expected
    assert stores["two-workers"] == stores["one"]
    assert stores["two-processes"] == stores["one"]
