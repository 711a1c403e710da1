"""The maturity window's clock: a watermark over every input partition.

Each input partition (predictions and outcomes alike) tracks its progress
with a :class:`PartitionProgress` and reports it now and then; one
:class:`WatermarkClock` turns the reports into a watermark, broadcast to
every join shard. Pure: wall-clock times are passed in.

Event time (the default). A partition's progress is the newest event time
read from it. The watermark is the *oldest* progress among partitions that
still have data to read, minus the allowed lateness, so a partition that lags
(a backfill, a slow consumer, outcomes read behind predictions) holds every
timeout back instead of letting predictions time out while their outcomes sit
unread. A partition at its end and silent for ``idle_after_s`` stops holding
it back (idle partitions would stall it forever); once every partition is
caught up, the watermark is the newest progress minus the lateness. No
partition may be unheard of: until each has reported once, nothing times out.
The watermark never goes back. Consequence: with no new input, pending
predictions wait (event time does not pass by itself).

Processing time. Each record's window time is the wall clock when it was read
and every partition reports the wall clock as its progress, so the watermark
is the wall clock (minus the lateness): timeouts fire with no input at all,
but a restart re-reads records at a new time.

>>> clock = WatermarkClock(["p:0", "o:0"], lateness_ms=10)
>>> clock.update(ClockReport("p:0", 5_000, caught_up=False)) is None  # o:0 unheard of
True
>>> clock.update(ClockReport("o:0", 1_000, caught_up=False))  # o:0 lags: it holds the clock
990
>>> clock.update(ClockReport("o:0", 1_000, caught_up=True))  # o:0 is done: p:0 leads
4990
>>> clock.update(ClockReport("p:0", 4_000, caught_up=False)) is None  # never backwards
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from loopline.streams.labels.inputs import ClockReport

EVENT_TIME = "event"
PROCESSING_TIME = "processing"
TIME_MODES = (EVENT_TIME, PROCESSING_TIME)


@dataclass
class PartitionProgress:
    """One input partition's progress and when to report it (pure; times passed in).

    Reports go out on the first call, whenever the partition becomes caught up
    or stops being so, when the progress moved and ``report_every_ms`` has
    passed, and at least every ``heartbeat_ms`` (the clock step needs input to
    run, and in processing time the heartbeat *is* the clock).

    >>> p = PartitionProgress("p:0", idle_after_ms=1000, report_every_ms=200)
    >>> p.observe(5_000, now_ms=0); p.poll(at_end=False, now_ms=0)
    ClockReport(source='p:0', max_ms=5000, caught_up=False)
    >>> p.observe(6_000, now_ms=100); p.poll(at_end=True, now_ms=100) is None  # too soon
    True
    >>> p.poll(at_end=True, now_ms=1_100)  # at its end, silent for 1 s
    ClockReport(source='p:0', max_ms=6000, caught_up=True)
    """

    source: str
    idle_after_ms: int
    report_every_ms: int = 200
    heartbeat_ms: int = 1000
    processing_time: bool = False
    max_ms: int = 0
    _last_data_ms: int = -(1 << 62)
    _last_report_ms: int | None = None
    _reported: ClockReport | None = None

    @property
    def caught_up_reported(self) -> bool:
        """Whether the clock was last told this partition is caught up."""
        return self._reported is not None and self._reported.caught_up

    def observe(self, t_ms: int, now_ms: int) -> None:
        """A record with window time ``t_ms`` was read at ``now_ms``."""
        if t_ms > self.max_ms:
            self.max_ms = t_ms
        self._last_data_ms = now_ms

    def poll(self, at_end: bool, now_ms: int) -> ClockReport | None:
        """The report to send now, if one is due."""
        if self.processing_time:
            self.max_ms = max(self.max_ms, now_ms)
            caught_up = True
        else:
            caught_up = at_end and now_ms - self._last_data_ms >= self.idle_after_ms
        report = ClockReport(self.source, self.max_ms, caught_up)
        last = self._reported
        since = now_ms - self._last_report_ms if self._last_report_ms is not None else None
        due = (
            last is None
            or since is None
            or last.caught_up != caught_up
            # In processing time the progress is the wall clock: the heartbeat suffices.
            or (
                not self.processing_time
                and last.max_ms != report.max_ms
                and since >= self.report_every_ms
            )
            or since >= self.heartbeat_ms
        )
        if not due:
            return None
        self._reported = report
        self._last_report_ms = now_ms
        return report


@dataclass
class WatermarkClock:
    """Every input partition's latest report, and the watermark they allow."""

    sources: Iterable[str]
    lateness_ms: int
    progress: dict[str, ClockReport] = field(default_factory=dict)
    watermark_ms: int | None = None

    def __post_init__(self) -> None:
        self.sources = tuple(sorted(set(self.sources)))

    def update(self, report: ClockReport) -> int | None:
        """Take one report; returns the new watermark when it advanced."""
        self.progress[report.source] = report
        candidate = self._candidate()
        if candidate is None or (self.watermark_ms is not None and candidate <= self.watermark_ms):
            return None
        self.watermark_ms = candidate
        return candidate

    def _candidate(self) -> int | None:
        reports = []
        for source in self.sources:
            r = self.progress.get(source)
            if r is None:
                return None
            reports.append(r)
        if not reports:
            return None
        lagging = [r.max_ms for r in reports if not r.caught_up]
        base = min(lagging) if lagging else max(r.max_ms for r in reports)
        if base <= 0:
            return None
        return base - self.lateness_ms
