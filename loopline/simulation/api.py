"""What a repo's simulator yields and takes; how Loopline finds it.

>>> cfg = SimulationConfig(seed=1, start_ms=1_700_000_000_000, duration_s=60, rate=10)
>>> cfg.end_ms - cfg.start_ms, cfg.drift_at_ms is None, cfg.param("fraud_rate", 0.01)
(60000, True, 0.01)
>>> e = SimEvent("rides", {"ride_id": "r1", "ts": 5}, time_ms=5, key="c1", label=12.5,
...              outcome_delay_s=30.0)
>>> e.scored, e.outcome_time_ms
(True, 30005)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError, DefinitionError
from loopline.featurerepo.loader import import_file


@dataclass(frozen=True)
class SimEvent:
    """One simulated event of the repo's ``source``, in event-time order.

    ``record`` is the event's JSON object as a producer would send it;
    ``key`` its Kafka key. An event the model scores carries its true
    ``label`` and ``outcome_delay_s``: its outcome is due that long after it.
    ``tag`` names what generated it (``legit``, ``burst``, ``jam``...), for reports.
    """

    source: str
    record: dict[str, Any]
    time_ms: int
    key: str
    label: float | None = None
    outcome_delay_s: float | None = None
    tag: str = ""

    @property
    def scored(self) -> bool:
        return self.label is not None

    @property
    def outcome_time_ms(self) -> int:
        return self.time_ms + round((self.outcome_delay_s or 0.0) * 1000)


@dataclass(frozen=True)
class SimulationConfig:
    """What shapes a simulated stream; the same config yields the same stream.

    ``rate`` is the mean rate of scored events per second of event time;
    ``drift_at_s`` injects the scenario's world change that many seconds in;
    ``params`` holds the scenario's own knobs (documented by each simulator).
    """

    seed: int = 7
    start_ms: int = 1_700_000_000_000
    duration_s: float = 60.0
    rate: float = 100.0
    outcome_delay_s: float = 30.0
    drift_at_s: float | None = None
    daily_rhythm: bool = True
    max_events: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError("simulation rate must be > 0 events/s")
        if self.duration_s <= 0:
            raise ConfigError("simulation duration must be > 0 s")
        if self.outcome_delay_s < 0:
            raise ConfigError("simulation outcome delay must be >= 0 s")

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.duration_s * 1000)

    @property
    def drift_at_ms(self) -> int | None:
        return None if self.drift_at_s is None else self.start_ms + int(self.drift_at_s * 1000)

    def param(self, name: str, default: Any) -> Any:
        return self.params.get(name, default)


Simulate = Callable[[SimulationConfig], Iterator[SimEvent]]


def load_simulator(root: Path, file: str = "simulator.py") -> Simulate:
    """The ``simulate`` function of a repo's simulator module."""
    return load_simulation(root, file).simulate


@dataclass(frozen=True)
class Simulation:
    """A repo's simulator module: ``simulate`` and the knobs ``loopline demo`` uses.

    ``DEMO_PARAMS`` (optional, a dict at module level) are the params of a
    scenario that shows the loop close within minutes; ``--param`` overrides them.
    """

    simulate: Simulate
    demo_params: Mapping[str, Any] = field(default_factory=dict)


def load_simulation(root: Path, file: str = "simulator.py") -> Simulation:
    """Import a repo's simulator module (see :class:`Simulation`)."""
    path = (root / file).resolve()
    if not path.is_file():
        raise ConfigError(
            f"{root}: no simulator ({file}); write one defining simulate(config), or produce "
            "events with any Kafka client"
        )
    module = import_file(path, "loopline_sim")
    simulate = getattr(module, "simulate", None)
    if not callable(simulate):
        raise DefinitionError(f"{path.name}: define simulate(config) -> Iterator[SimEvent]")
    demo_params = getattr(module, "DEMO_PARAMS", {})
    if not isinstance(demo_params, Mapping):
        raise DefinitionError(f"{path.name}: DEMO_PARAMS must be a dict of param values")
    return Simulation(simulate, dict(demo_params))
