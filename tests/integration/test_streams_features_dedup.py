"""Events that land twice on the topic count once: the features flow on the real stack.

A producer whose in-flight messages time out while the broker is down re-sends
them (librdkafka bumps its idempotent epoch), and they land again at new
offsets of the same partition. Redis must equal the offline replay of the
events without their copies, byte for byte; the copies are counted
(``loopline_features_duplicates_total``), never dead-lettered, including the
copies that land after a ``kill -9`` and a restart from the snapshot, and
``loopline backfill`` over the same topic skips them the same way.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from features_support import (
    FeaturesRun,
    dead_letters,
    events,
    expected_store,
    features_flow,
    flow_metrics,
    produce_events,
    stored,
)

from loopline.stack.ports import free_port
from loopline.streams.features.backfill import backfill

DUPLICATES = ("loopline_features_duplicates_total", ())


def _with_copies(
    docs: list[dict[str, Any]], every: int, behind: int
) -> tuple[list[dict[str, Any]], int]:
    """``docs`` with a copy of every ``every``-th one re-sent ``behind`` events later."""
    out: list[dict[str, Any]] = []
    copies = 0
    for i, doc in enumerate(docs):
        out.append(doc)
        j = i - behind
        if j >= 0 and j % every == 0:
            out.append(docs[j])
            copies += 1
    return out, copies


def test_copies_count_once_before_and_after_a_restart_and_in_a_backfill(
    features_run: FeaturesRun,
) -> None:
    run = features_run
    first, second = events(8000, seed=41, part=(0, 2)), events(8000, seed=42, part=(1, 2))
    # Copies a few hundred events (~4 s of event time) behind their originals:
    # well within the 60 s allowed lateness, so without deduplication they
    # would be counted twice.
    sent_first, copies_first = _with_copies(first, every=13, behind=400)
    expected_first = expected_store(first, run.key_prefix)
    assert expected_store(sent_first, run.key_prefix) != expected_first, "copies change nothing"
    recovery = str(run.tmp_path / "recovery")
    log = run.tmp_path / "flow.log"
    produce_events(run.settings, run.topics.events, sent_first)

    port = free_port()
    flow = features_flow(
        run.settings, run.key_prefix, log, "--recovery-dir", recovery, metrics_port=port
    )
    flow.until(
        lambda: (
            flow_metrics(port).get(DUPLICATES) == copies_first
            and stored(run.redis, run.key_prefix) == expected_first
        ),
        f"the first part's values and {copies_first} duplicates",
    )
    time.sleep(2.5)  # at least one snapshot (interval 1 s) covers the first part
    assert flow_metrics(port)[DUPLICATES] == copies_first
    flow.kill9()

    # After the restart: copies of the first part's last events (only the id
    # window restored from the snapshot knows them), new events with copies,
    # and copies of the first part's first 30 events, about two minutes behind
    # their partition's stream time by then: duplicates, not late events.
    sent_second, copies_second = _with_copies(second, every=17, behind=250)
    sent_second = first[-200:] + sent_second + first[:30]
    copies_second += 200 + 30
    produce_events(run.settings, run.topics.events, sent_second)
    port = free_port()
    flow = features_flow(
        run.settings, run.key_prefix, log, "--recovery-dir", recovery, metrics_port=port
    )
    expected = expected_store(first + second, run.key_prefix)
    flow.until(
        lambda: (
            flow_metrics(port).get(DUPLICATES) == copies_second
            and stored(run.redis, run.key_prefix) == expected
        ),
        f"every value and {copies_second} duplicates after the restart",
    )
    time.sleep(1.0)  # nothing more may come: each copy counted once, no event twice
    m = flow_metrics(port)
    flow.stop()
    assert m[DUPLICATES] == copies_second
    assert m[("loopline_features_events_total", ())] == len(second)
    assert stored(run.redis, run.key_prefix) == expected
    assert not dead_letters(run.settings, run.topics.dead_letters)

    # The backfill runs the same decoder per partition over the whole topic.
    prefix = f"{run.key_prefix}-backfill"
    settings = replace(run.settings, streams=replace(run.settings.streams, redis_key_prefix=prefix))
    report = backfill(settings, progress=lambda _line: None)
    rebuilt = stored(run.redis, prefix)
    if rebuilt:
        run.redis.delete(*rebuilt)
    assert rebuilt == expected_store(first + second, prefix)
    assert (report.events, report.duplicates, report.skipped) == (
        len(first) + len(second),
        copies_first + copies_second,
        0,
    )
