"""``loopline simulate``: any repo's simulator, paced onto Kafka.

Registered by the streams component's ``register(subparsers)`` (so
``python -m loopline.streams simulate`` works too); the options are generic,
the scenario's own knobs go through ``--param NAME=VALUE``.

>>> parse_params(["cards=300", "fraud_rate=0.05", "name=rush", "flat=true"])
{'cards': 300, 'fraud_rate': 0.05, 'name': 'rush', 'flat': True}
>>> parse_start("2024-05-01T12:00:00Z")
1714564800000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import Settings
from loopline.simulation.api import SimulationConfig


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; values read as JSON when they parse (numbers, true), else text."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param {item!r}: write NAME=VALUE, e.g. --param fraud_rate=0.05")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[name.strip()] = value
    return out


def parse_start(text: str) -> int:
    """``now``, epoch milliseconds, or an ISO-8601 time (UTC when no zone) -> epoch ms."""
    if text == "now":
        return int(time.time()) * 1000
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError(f"start time {text!r}: use now, epoch ms or ISO-8601") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def add_param_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        default=[],
        help="a scenario knob of the repo's simulator (repeatable; see its docstring)",
    )


def add_simulation_arguments(p: argparse.ArgumentParser) -> None:
    d = SimulationConfig()
    p.add_argument("--seed", type=int, default=d.seed, help="same seed, same stream")
    p.add_argument(
        "--start",
        default="now",
        help="event time of the first moment: now, epoch ms or ISO-8601 (default now)",
    )
    p.add_argument("--duration", type=float, default=d.duration_s, help="event-time seconds")
    p.add_argument("--max-events", type=int, help="stop after this many events")
    p.add_argument(
        "--rate", type=float, default=d.rate, help="mean scored events per second of event time"
    )
    p.add_argument("--flat", action="store_true", help="no daily rhythm: the same rate at any hour")
    p.add_argument(
        "--outcome-delay",
        type=float,
        default=d.outcome_delay_s,
        help="seconds from a scored event to its outcome (the simulator may vary it)",
    )
    p.add_argument("--drift-at", type=float, help="inject the scenario's drift this many s in")
    add_param_argument(p)
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="event time per wall-clock second (1: real time; 0: as fast as possible)",
    )


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    if args.max_events is not None and args.max_events < 0:
        raise ConfigError("--max-events must be >= 0")
    return SimulationConfig(
        seed=args.seed,
        start_ms=parse_start(args.start),
        duration_s=args.duration,
        rate=args.rate,
        outcome_delay_s=args.outcome_delay,
        drift_at_s=args.drift_at,
        daily_rhythm=not args.flat,
        max_events=args.max_events,
        params=parse_params(args.param),
    )


def register_simulate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="produce the repo's simulated events and delayed outcomes to Kafka",
        description="Run the feature repo's simulator (simulate(config) in its simulator.py): "
        "each event to its source's topic, each scored event's outcome to the outcomes topic "
        "when due, paced by --speed, every delivery checked. Deterministic for a seed and start.",
    )
    add_simulation_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    if not any("--repo" in a.option_strings for a in p._actions):
        # The full CLI adds --repo itself; `python -m loopline.streams` does not.
        p.add_argument("--repo", metavar="PATH", default=argparse.SUPPRESS, help="feature repo")
    p.set_defaults(func=simulate_command)


def simulate_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from loopline.config.cli import settings_of
    from loopline.config.kafka import producer_config
    from loopline.contracts.topics import Topics
    from loopline.featurerepo.loader import find_repo, load_project, read_repo_config
    from loopline.kafka.checked_producer import CheckedProducer
    from loopline.simulation.api import load_simulation
    from loopline.simulation.producer import produce_simulation
    from loopline.simulation.timeline import Routes

    settings = settings_of(args, settings)
    root = _repo_root(settings, getattr(args, "repo", None), find_repo)
    project = load_project(root)
    simulation = load_simulation(root, read_repo_config(root).simulator)
    config = config_from_args(args)
    routes = Routes.of(
        project, project.model(settings.project.model), Topics(settings.kafka.topic_prefix)
    )
    started = time.monotonic()

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    sink = CheckedProducer(
        producer_config(settings.kafka, **{"queue.buffering.max.messages": 500_000})
    )
    report = produce_simulation(
        simulation.simulate(config),
        routes,
        sink,
        start_ms=config.start_ms,
        speed=args.speed,
        progress=progress,
    )
    print(report.describe(time.monotonic() - started))
    return 0


def _repo_root(settings: Settings, explicit: str | None, find_repo: Any) -> Path:
    """The repo the settings name, else ``--repo`` / $LOOPLINE_REPO / the built-in example."""
    if settings.project.repo is not None and explicit is None:
        return Path(settings.project.repo)
    return Path(find_repo(explicit))
