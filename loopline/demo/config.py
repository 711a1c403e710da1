"""The demo's shape (durations, rates, drift) and the settings of one run.

Every run gets its own topic prefix, Redis key prefix, registry, offline
store and recovery directory under ``<state_dir>/demo/<run id>``, so runs never
see each other's data, and the services read one TOML file written here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.stack.ports import free_port


@dataclass(frozen=True)
class DemoConfig:
    """How much traffic, for how long, and when the world changes."""

    seed: int = 11
    # Event-time history replayed before the live phase: bootstrap training
    # data and warm feature windows.
    history_s: float = 600.0
    # Live phase: real-time traffic, one Predict per scored event.
    live_s: float = 150.0
    # Mean scored events per second (the simulator's rate).
    rate: float = 120.0
    outcome_delay_s: float = 4.0
    # Drift starts this share of the way into the live phase; what changes is
    # the repo simulator's scenario (it should make the old model degrade).
    drift_at: float = 0.35
    # Scenario knobs for the repo's simulator, over its DEMO_PARAMS.
    params: Mapping[str, Any] = field(default_factory=dict)
    # After the live phase, wait at most this long for the loop to close.
    grace_s: float = 45.0
    # How the retrained model goes live: "champion" (at once), or "canary" /
    # "shadow" (a rollout plan that `loopline run rollout` promotes from labels).
    publish_as: str = "champion"
    keep: bool = False
    console: bool = True
    report_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.live_s <= 0 or self.history_s <= 0 or self.rate <= 0:
            raise ConfigError("demo durations and rate must be > 0")
        if not 0 < self.drift_at < 1:
            raise ConfigError("demo drift_at is a share of the live phase, in (0, 1)")
        if self.publish_as not in ("champion", "canary", "shadow"):
            raise ConfigError(
                f"demo publish_as must be champion, canary or shadow, not {self.publish_as!r}"
            )

    @property
    def rollout(self) -> bool:
        return self.publish_as != "champion"

    @property
    def drift_offset_s(self) -> float:
        """Drift time in the simulator's event time (from the history's start)."""
        return self.history_s + self.live_s * self.drift_at


def run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def run_overrides(run_dir: Path, rid: str, demo: DemoConfig) -> dict[str, dict[str, Any]]:
    """Settings every service of this run shares (on top of the user's).

    Ports are picked free, so a demo runs beside a deployment (or another demo).
    """
    tag = "d" + rid.replace("-", "")
    # Enough post-drift labels that the challenger can beat the champion.
    min_rows = int(demo.rate * 60)
    return {
        "kafka": {"topic_prefix": f"{tag}.", "consumer_group_prefix": f"loopline-{tag}-"},
        "serving": {"port": free_port(), "metrics_port": free_port()},
        "streams": {
            "metrics_port": free_port(),
            "redis_key_prefix": tag,
            "recovery_dir": str(run_dir / "recovery"),
        },
        "registry": {"path": str(run_dir / "registry")},
        "trainer": {
            "offline_store": str(run_dir / "offline"),
            "state_dir": str(run_dir / "trainer"),
            # One thread: OpenMP spinning on a 2-core machine shared with six
            # services slows training tenfold.
            "num_threads": 1,
            "metrics_port": free_port(),
        },
        "labels": {
            # Minutes of traffic, not weeks: labels mature in seconds and the
            # labeled log flushes often so drift sees errors quickly.
            "maturity_s": max(demo.outcome_delay_s * 4, 15.0),
            "allowed_lateness_s": 5.0,
            "flush_interval_s": 2.0,
            "outcome_retention_s": 120.0,
            "metrics_port": free_port(),
        },
        "drift": {
            # Shorter warm-up and reference windows: minutes of traffic, not days.
            "reference_size": 500,
            "warmup": 200,
            "data_min_persist": 128,
            "performance_window": 500,
            "performance_every": 50,
            "metrics_port": free_port(),
        },
        "policy": {
            "min_interval_s": 0.0,
            "schedule_s": 0.0,
            "tick_s": 0.2,
            "min_new_rows": min_rows,
            "metrics_port": free_port(),
        },
        "rollout": _rollout_overrides(demo),
    }


def _rollout_overrides(demo: DemoConfig) -> dict[str, Any]:
    if not demo.rollout:
        return {"publish_mode": "champion", "metrics_port": free_port()}
    return {
        "publish_mode": demo.publish_as,
        "canary_share": 0.5,
        "shadow_share": 1.0,
        # Five seconds of traffic per arm: enough labels (with a few dozen
        # positives) for AUC to tell a clearly worse candidate apart.
        "min_labels": int(demo.rate * 5),
        "auc_margin": 0.02,
        "log_loss_margin": 0.05,
        "decide_every_s": 1.0,
        "metrics_port": free_port(),
    }


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    """``sections`` as a TOML file (paths written as strings)."""
    plain = {
        section: {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        for section, values in sections.items()
    }
    try:
        path.write_text(tomli_w.dumps(plain))
    except TypeError as e:
        raise ConfigError(f"cannot write the settings to TOML: {e}") from e


def settings_to_sections(settings: Settings) -> dict[str, dict[str, Any]]:
    """The full settings as TOML sections (so the services see the user's choices too)."""
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(settings):
        section = getattr(settings, f.name)
        out[f.name] = {
            k.name: getattr(section, k.name)
            for k in dataclasses.fields(section)
            if getattr(section, k.name) is not None
            and isinstance(getattr(section, k.name), bool | int | float | str | Path)
        }
    return out


def prepare(base: Settings, demo: DemoConfig, state_root: Path) -> tuple[Settings, Path, Path]:
    """Write this run's config; returns (its settings, the run dir, the TOML path)."""
    rid = run_id()
    run_dir = (state_root / "demo" / rid).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sections = settings_to_sections(base)
    for section, values in run_overrides(run_dir, rid, demo).items():
        if section in sections:
            sections[section].update(values)
    config_path = run_dir / "loopline.toml"
    write_toml(config_path, sections)
    return load_settings(config_path, env={}), run_dir, config_path
