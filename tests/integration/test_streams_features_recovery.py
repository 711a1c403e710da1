"""The features flow on the real stack, run as real processes: restarts and parallelism.

Online values in Redis must equal the offline replay (``final_values``) over
the same events, byte for byte, after a ``kill -9`` mid-stream and a restart,
and whether one worker, two workers or two processes computed them.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka.admin import AdminClient
from features_support import (
    FeaturesRun,
    dead_letters,
    end_offsets,
    events,
    expected_store,
    features_flow,
    produce_events,
    stored,
)


def test_kill_9_mid_stream_then_restart_equals_one_clean_run(features_run: FeaturesRun) -> None:
    run = features_run
    first, second = events(20_000, seed=2, part=(0, 2)), events(60_000, seed=3, part=(1, 2))
    recovery = str(run.tmp_path / "recovery")
    log = run.tmp_path / "flow.log"
    produce_events(run.settings, run.topics.events, first)
    flow = features_flow(run.settings, run.key_prefix, log, "--recovery-dir", recovery)
    expected_first = expected_store(first, run.key_prefix)
    flow.until(lambda: stored(run.redis, run.key_prefix) == expected_first, "the first part")
    time.sleep(2.5)  # at least one snapshot (interval 1 s) covers the first part
    first_end = end_offsets(run.settings, run.topics.events)
    # The second part arrives at a steady pace; the flow dies in the middle of it.
    producer = threading.Thread(
        target=produce_events, args=(run.settings, run.topics.events, second, 15_000.0)
    )
    producer.start()
    time.sleep(1.5)
    flow.kill9()
    producer.join()
    expected = expected_store(first + second, run.key_prefix)
    assert stored(run.redis, run.key_prefix) != expected, "the kill came too late to test anything"
    # Drop the first part from the topic: only a restart that really resumes from
    # its snapshot (state and offsets together) can still get every value right.
    admin = AdminClient({"bootstrap.servers": run.settings.kafka.bootstrap_servers})
    for future in admin.delete_records(first_end).values():
        future.result(30)

    features_flow(
        run.settings, run.key_prefix, log, "--recovery-dir", recovery, "--drain", "2"
    ).wait()

    assert stored(run.redis, run.key_prefix) == expected
    assert not dead_letters(run.settings, run.topics.dead_letters)


def test_two_workers_and_two_processes_equal_one_worker(features_run: FeaturesRun) -> None:
    run = features_run
    stream = events(15_000, seed=4)
    produce_events(run.settings, run.topics.events, stream)
    runs = {
        "one": ("--workers", "1"),
        "two-workers": ("--workers", "2"),
        "two-processes": ("--processes", "2"),
    }
    stores = {}
    for name, args in runs.items():
        prefix = f"{run.key_prefix}-{name}"
        flow = features_flow(
            run.settings,
            prefix,
            run.tmp_path / f"{name}.log",
            *args,
            "--drain",
            "2",
            "--recovery-dir",
            str(run.tmp_path / f"recovery-{name}"),
        )
        flow.wait()
        store = stored(run.redis, prefix)
        stores[name] = {k[len(prefix) :]: v for k, v in store.items()}
        if store:
            run.redis.delete(*store)
    expected = {
        k[len(run.key_prefix) :]: v for k, v in expected_store(stream, run.key_prefix).items()
    }
    assert stores["one"] == expected
    assert stores["two-workers"] == stores["one"]
    assert stores["two-processes"] == stores["one"]
