"""The maturity window's clock (streams/labels/clock.py): partition progress and watermark."""

from __future__ import annotations

import pickle

from loopline.streams.labels.clock import PartitionProgress, WatermarkClock
from loopline.streams.labels.inputs import ClockReport

SOURCES = ["p:0", "p:1", "o:0"]


def clock(lateness_ms: int = 100) -> WatermarkClock:
    return WatermarkClock(SOURCES, lateness_ms=lateness_ms)


def test_nothing_moves_until_every_partition_has_reported() -> None:
    c = clock()
    assert c.update(ClockReport("p:0", 10_000, caught_up=True)) is None
    assert c.update(ClockReport("p:1", 10_000, caught_up=True)) is None
    assert c.watermark_ms is None
    assert c.update(ClockReport("o:0", 2_000, caught_up=True)) == 9_900


def test_a_lagging_partition_holds_the_watermark_back() -> None:
    """A backfill: predictions read far ahead of outcomes must not time out early."""
    c = clock()
    c.update(ClockReport("p:0", 50_000, caught_up=False))
    c.update(ClockReport("p:1", 40_000, caught_up=True))
    assert c.update(ClockReport("o:0", 3_000, caught_up=False)) == 2_900
    assert c.update(ClockReport("o:0", 30_000, caught_up=False)) == 29_900
    # The outcomes are all read: the slowest partition still reading leads.
    assert c.update(ClockReport("o:0", 31_000, caught_up=True)) == 49_900
    assert c.update(ClockReport("p:0", 60_000, caught_up=True)) == 59_900


def test_a_partition_that_never_had_data_holds_it_until_caught_up() -> None:
    c = clock()
    c.update(ClockReport("p:0", 50_000, caught_up=True))
    c.update(ClockReport("p:1", 50_000, caught_up=True))
    assert c.update(ClockReport("o:0", 0, caught_up=False)) is None
    assert c.update(ClockReport("o:0", 0, caught_up=True)) == 49_900


def test_the_watermark_never_goes_back() -> None:
    c = clock()
    for s in SOURCES:
        c.update(ClockReport(s, 10_000, caught_up=True))
    assert c.watermark_ms == 9_900
    assert c.update(ClockReport("p:0", 5_000, caught_up=False)) is None
    assert c.watermark_ms == 9_900


def test_the_clock_pickles_with_its_progress() -> None:
    c = clock()
    for s in SOURCES:
        c.update(ClockReport(s, 10_000, caught_up=False))
    restored = pickle.loads(pickle.dumps(c))
    assert restored.watermark_ms == 9_900
    assert restored.update(ClockReport("o:0", 20_000, caught_up=True)) is None  # p:* lag at 10 s
    assert restored.update(ClockReport("p:0", 20_000, caught_up=True)) is None
    assert restored.update(ClockReport("p:1", 20_000, caught_up=True)) == 19_900


def test_progress_reports_first_on_state_changes_throttled_and_on_heartbeat() -> None:
    p = PartitionProgress("p:0", idle_after_ms=500, report_every_ms=200, heartbeat_ms=1_000)
    assert p.poll(at_end=False, now_ms=0) == ClockReport("p:0", 0, caught_up=False)
    assert p.poll(at_end=False, now_ms=10) is None  # nothing new
    p.observe(7_000, now_ms=20)
    assert p.poll(at_end=False, now_ms=20) is None  # throttled
    assert p.poll(at_end=False, now_ms=200) == ClockReport("p:0", 7_000, caught_up=False)
    p.observe(6_000, now_ms=300)  # an older record does not move the progress back
    assert p.poll(at_end=True, now_ms=300) is None  # at the end, but not silent long enough
    assert p.poll(at_end=True, now_ms=800) == ClockReport("p:0", 7_000, caught_up=True)
    assert not p.poll(at_end=True, now_ms=1_500)
    assert p.poll(at_end=True, now_ms=1_800) == ClockReport("p:0", 7_000, caught_up=True)
    assert p.caught_up_reported
    p.observe(8_000, now_ms=1_900)  # new data: no longer idle, reported at once
    assert p.poll(at_end=False, now_ms=1_900) == ClockReport("p:0", 8_000, caught_up=False)
    assert not p.caught_up_reported


def test_processing_time_progress_is_the_wall_clock_on_each_heartbeat() -> None:
    p = PartitionProgress("o:0", idle_after_ms=500, heartbeat_ms=1_000, processing_time=True)
    assert p.poll(at_end=False, now_ms=5_000) == ClockReport("o:0", 5_000, caught_up=True)
    p.observe(5_100, now_ms=5_100)
    assert p.poll(at_end=False, now_ms=5_300) is None
    assert p.poll(at_end=False, now_ms=6_000) == ClockReport("o:0", 6_000, caught_up=True)
    c = WatermarkClock(["o:0"], lateness_ms=0)
    assert c.update(ClockReport("o:0", 6_000, caught_up=True)) == 6_000
