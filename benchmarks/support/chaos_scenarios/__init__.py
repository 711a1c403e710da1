"""Fault-injection scenarios for ``benchmarks/chaos.py``.

Each scenario is a module in this package with a ``NAME`` (the ``--scenario``
value), a one-line ``SUMMARY`` and ``run(options) -> ScenarioResult``. A
scenario starts what it needs (its own broker or Redis when it kills one; the
shared ``loopline up`` stack is never killed), drives the demo-like load,
injects one fault, checks its invariants and returns the figures.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class ChaosOptions:
    """What every scenario is given: load size and where to keep scratch files."""

    seconds: float = 30.0
    events_per_s: float = 500.0
    seed: int = 7
    # Events the ``backlog`` scenario dumps on the features flow at once.
    backlog_events: int = 1_000_000


@dataclass(frozen=True)
class ScenarioResult:
    """One JSON line of ``benchmarks/chaos.py``; ``invariant_ok`` False is a finding."""

    scenario: str
    events_sent: int = 0
    events_acked: int = 0
    events_lost: int = 0
    predict_calls: int = 0
    predict_failed: int = 0
    predict_degraded: int = 0
    recovery_s: float | None = None
    invariant_ok: bool = False
    # Scenario-specific figures and the invariants checked, by name.
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


Scenario = Callable[[ChaosOptions], ScenarioResult]


def scenarios() -> dict[str, ModuleType]:
    """Every scenario module of this package, by ``NAME``, in name order."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.NAME] = module
    return dict(sorted(found.items()))
