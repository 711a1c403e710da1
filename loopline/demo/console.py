"""The live console view: throughput, freshness, latency, model, drift, retrains."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from loopline.demo.run import DemoRun
    from loopline.demo.services import Service


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LiveView:
    """A rich ``Live`` display refreshed from the run's counters, scrapes and topics."""

    def __init__(self, run: DemoRun, services: Mapping[str, Service], enabled: bool) -> None:
        self.run = run
        self.services = services
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._live: Live | None = None
        self._last_line = 0.0

    def start(self) -> None:
        if self.enabled and self.console.is_terminal:
            self._live = Live(
                get_renderable=self.render, console=self.console, refresh_per_second=2
            )
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def render(self) -> Group:
        run, stats = self.run, self.run.stats
        now = time.time()
        elapsed = now - run.live_start_wall_s if run.live_start_wall_s else 0.0
        with stats.lock:
            recent = [r for r in stats.records[-2000:] if r.wall_s >= now - 10]
            total = len(stats.records)
            failed = sum(1 for r in stats.records if not r.ok)
            version = next((r.model_version for r in reversed(stats.records) if r.ok), "-")
        latencies = [r.latency_ms / 1000 for r in recent if r.ok]
        point = run.scraper.points[-1] if run.scraper and run.scraper.points else None
        happened = run.watcher.happened if run.watcher else None
        t = Table(title=f"Loopline demo  {run.run_dir.name}", show_header=False, expand=False)
        t.add_column(style="bold cyan")
        t.add_column()
        drift_at = run.drift_wall_s - run.live_start_wall_s if run.drift_wall_s else math.nan
        phase = "before drift" if now < run.drift_wall_s else "drift injected"
        t.add_row("live", f"{elapsed:5.0f} s  ({phase}; drift at {drift_at:.0f} s)")
        t.add_row(
            "throughput",
            f"{len(recent) / 10:6.0f} predictions/s   events sent {stats.events_sent:,}",
        )
        t.add_row(
            "Predict (client)",
            f"p50 {_ms(_pct(latencies, 0.5))}  p99 {_ms(_pct(latencies, 0.99))}   "
            f"{total:,} calls, {failed} failed",
        )
        if point is not None:
            t.add_row(
                "Predict (server)",
                f"p50 {_ms(point.serve_p50_s)}  p99 {_ms(point.serve_p99_s)}",
            )
            t.add_row(
                "freshness",
                f"p50 {_ms(point.freshness_p50_s)}  p99 {_ms(point.freshness_p99_s)}  "
                f"(event -> Redis)",
            )
        t.add_row("model version", Text(version, style="bold green"))
        if happened is not None:
            kinds = sorted({f"{e.kind}:{e.feature}" for e in happened.drift})
            t.add_row("drift alarms", f"{len(happened.drift)}  {', '.join(kinds[:4])}")
            t.add_row(
                "retrains / updates",
                f"{len(happened.retrain)} requested, {len(happened.model_updates)} model updates",
            )
        down = [n for n, s in self.services.items() if not s.alive()]
        if down:
            t.add_row("services down", Text(", ".join(down), style="bold red"))
        return Group(t)

    def line(self) -> None:
        """A plain progress line (for logs and non-terminal output), at most every 10 s."""
        if self._live is not None or time.time() - self._last_line < 10:
            return
        self._last_line = time.time()
        stats = self.run.stats
        self.console.print(
            f"live: {stats.events_sent:,} events, {len(stats.records):,} predictions, "
            f"{len(stats.failures())} failed, versions {stats.versions_served()}"
        )
