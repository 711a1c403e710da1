"""The labels and drift flows as local Bytewax clusters on the real broker.

``--processes 2 --workers 2`` on topics of 8 partitions: every worker reads
some, the join keys' state is spread over all four. The cluster must label
exactly what one worker labels, each example once, and survive a ``kill -9``
of one of its processes by a restart of the whole cluster from its recovery
snapshots. (The features flow's cluster: test_streams_features_recovery.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flow_process import FlowProcess
from kafka_support import kafka_env, read_to_end
from labels_support import (
    assert_each_once,
    expected_label,
    first_part_then_steady,
    flow_settings,
    labels_flow,
    produce,
    sentinel,
    store_rows,
    stream,
    summary,
)

from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import LabeledExample, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.stack import delete_topics, ensure_topics
from loopline.streams.common.run_options import RunOptions, check_run_options

PARTITIONS = 8
CLUSTER = ("--processes", "2", "--workers", "2")


@pytest.fixture
def wide_topics(stack_settings: Settings) -> Iterator[Callable[[], Topics]]:
    """Call it for a fresh set of topics of ``PARTITIONS`` partitions each."""
    wide = replace(stack_settings, topics=replace(stack_settings.topics, partitions=PARTITIONS))
    made: list[Topics] = []

    def make() -> Topics:
        created = Topics(prefix=f"t{uuid.uuid4().hex[:8]}.")
        ensure_topics(wide, created)
        made.append(created)
        return created

    yield make
    for created in made:
        # Best effort, as for the shared fixture: a leftover topic only costs disk.
        with contextlib.suppress(Exception):
            delete_topics(stack_settings, created.all(), timeout_s=10)


@pytest.fixture
def topics(wide_topics: Callable[[], Topics]) -> Topics:
    """The shared fixture's topics, ``PARTITIONS`` partitions wide (``isolated_settings`` too)."""
    return wide_topics()


def on_topics(stack_settings: Settings, topics: Topics) -> Settings:
    """``stack_settings`` on ``topics``, as ``isolated_settings`` is on the test's own."""
    kafka = replace(
        stack_settings.kafka,
        topic_prefix=topics.prefix,
        consumer_group_prefix=f"{topics.prefix}group-",
    )
    return replace(stack_settings, kafka=kafka)


def labels_settings(settings: Settings, store: Path) -> Settings:
    return flow_settings(settings, store, writers=2, shards=16, flush_interval_s=0.5)


def cluster_children(flow: FlowProcess) -> list[int]:
    """The pids of the processes a ``--processes`` launcher started, once all have started."""
    pid = flow.proc.pid
    children: list[int] = []

    def started() -> bool:
        children[:] = map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        return len(children) == 2

    flow.until(started, "the cluster's two processes", timeout_s=20, interval_s=0.05)
    return children


def assert_on_topic_once(settings: Settings, topic: str, expected: dict[str, object]) -> None:
    on_topic = read_to_end(settings, topic)
    keys = Counter(m.key() for m in on_topic)
    assert max(keys.values()) == 1 and len(keys) == len(expected)
    assert_each_once([decode(LabeledExample, m.value() or b"") for m in on_topic], expected)


def test_labels_on_two_processes_of_two_workers_equal_one_worker(
    stack_settings: Settings,
    isolated_settings: Settings,
    topics: Topics,
    wide_topics: Callable[[], Topics],
    tmp_path: Path,
) -> None:
    n = 2_000
    records = [*stream(0, n), sentinel(n + 100)]
    expected = {f"r{i}": expected_label(i) for i in range(n)}
    # Each run writes its own labeled topic: a writer reconciles with what its topic holds.
    runs = {
        "one": (on_topics(stack_settings, wide_topics()), ("--workers", "1")),
        "cluster": (isolated_settings, CLUSTER),
    }
    rows: dict[str, list[LabeledExample]] = {}
    for name, (base, args) in runs.items():
        settings = labels_settings(base, tmp_path / name / "offline")
        topics_of_run = Topics(settings.kafka.topic_prefix)
        produce(settings, topics_of_run, records)
        recovery = tmp_path / name / "recovery"
        labels_flow(settings, recovery, tmp_path / f"{name}.log", *args, "--drain", "2").wait()
        rows[name] = store_rows(settings.trainer.offline_store)
        assert_each_once(rows[name], expected)
        assert_on_topic_once(settings, topics_of_run.labeled, expected)

    def by_request(examples: list[LabeledExample]) -> list[LabeledExample]:
        return sorted(examples, key=lambda e: e.request_id)

    assert by_request(rows["cluster"]) == by_request(rows["one"])

    # The drift flow's cluster starts on the same topics and drains them.
    drift = FlowProcess(
        "drift",
        kafka_env(isolated_settings),
        tmp_path / "drift.log",
        *CLUSTER,
        "--no-metrics",
        "--recovery-dir",
        str(tmp_path / "drift-recovery"),
        "--drain",
        "1",
    )
    drift.wait(60)


def test_kill_9_of_one_process_then_the_cluster_restarts_with_each_example_once(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    settings = labels_settings(isolated_settings, tmp_path / "offline")
    store, recovery, log = settings.trainer.offline_store, tmp_path / "recovery", tmp_path / "log"
    first, second = 7_000, 6_000
    produce(settings, topics, stream(0, first))
    flow = labels_flow(settings, recovery, log, *CLUSTER)
    victim = cluster_children(flow)[1]
    # A two-process cluster beside another test worker on two cores can take a minute
    # to start and store the first part; each check reads the whole store, so not too often.
    producer = first_part_then_steady(
        settings, topics, flow, first, second, timeout_s=180, interval_s=0.5
    )
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    # A cluster missing a process cannot go on: the launcher stops the other one.
    started = time.monotonic()
    code = flow.proc.wait(30)
    stopped_in = time.monotonic() - started
    flow.stop()
    assert code == 128 + signal.SIGKILL, f"launcher exited {code}:\n{flow.tail()}"
    producer.join()
    produce(settings, topics, [sentinel(first + second + 100)])
    expected = {f"r{i}": expected_label(i) for i in range(first + second)}
    before = summary(store_rows(store))
    assert len(before) < len(expected), "the kill came too late to test anything"

    labels_flow(settings, recovery, log, *CLUSTER, "--drain", "2").wait()

    rows = store_rows(store)
    assert_each_once(rows, expected)
    assert len(rows) == len(expected)  # raw rows across files: no duplicate at all
    assert_on_topic_once(settings, topics.labeled, expected)
    assert stopped_in < 15


def test_misconfigured_cluster_addresses_fail_before_anything_starts() -> None:
    bad = {
        (0, ("127.0.0.1:7001", "127.0.0.1")): "is not host:port",
        (2, ("127.0.0.1:7001", "127.0.0.1:7002")): "--process-id 2 is not in the cluster",
        (0, ("127.0.0.1:7001", "127.0.0.1:7001")): "lists a process twice",
        (0, ("127.0.0.1:99999",)): "is not host:port",
    }
    for (process_id, addresses), message in bad.items():
        with pytest.raises(ConfigError, match=message):
            check_run_options(RunOptions(process_id=process_id, addresses=addresses))
    check_run_options(RunOptions(process_id=1, addresses=("host-a:7001", "host-b:7001")))
