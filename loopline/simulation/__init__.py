"""Simulated use cases: the contract a feature repo's simulator fulfils, and a toolkit.

A repo may ship a simulator (``simulator: simulator.py`` in its
``loopline.yaml``): a module defining ``simulate(config) -> Iterator[SimEvent]``.
``loopline simulate`` and ``loopline demo`` drive any repo through it; the
toolkit (:mod:`loopline.simulation.toolkit`) holds the pieces simulators share.
"""

from loopline.simulation.api import SimEvent, SimulationConfig, load_simulator

__all__ = ["SimEvent", "SimulationConfig", "load_simulator"]
