"""What one demo run produced: the runner fills it in, the live view and the report read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loopline.contracts.settings import Settings
from loopline.demo.config import DemoConfig
from loopline.demo.observe import MetricsScraper, TopicWatcher
from loopline.demo.traffic import TrafficStats


@dataclass
class DemoRun:
    """Everything one run produced; the report reads it."""

    config: DemoConfig
    settings: Settings
    run_dir: Path
    started_wall_s: float
    stats: TrafficStats = field(default_factory=TrafficStats)
    history_events: int = 0
    history_outcomes: int = 0
    bootstrap_s: float = 0.0
    live_start_wall_s: float = 0.0
    drift_wall_s: float = 0.0
    live_end_wall_s: float = 0.0
    first_version: str = ""
    # The repo's model task: "binary" or "regression" (the report's metrics follow it).
    task: str = "binary"
    scraper: MetricsScraper | None = None
    watcher: TopicWatcher | None = None
    problems: list[str] = field(default_factory=list)
