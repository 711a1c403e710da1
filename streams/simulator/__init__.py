"""The traffic simulator: a pure, seeded generator and a paced Kafka producer.

Other components reuse the generator directly (the demo calls Predict for each
transaction before producing it)::

    from loopline.streams.simulator import Simulator, SimulatorConfig

    for sim in Simulator(SimulatorConfig(seed=7, rate=500)).transactions():
        sim.transaction, sim.label, sim.outcome_delay_s, sim.outcome
"""

from loopline.streams.simulator.config import SimulatorConfig, parse_start
from loopline.streams.simulator.generator import (
    BURST,
    CARD_TESTING,
    LEGIT,
    NEW_MERCHANT,
    SimulatedTransaction,
    Simulator,
)

__all__ = [
    "BURST",
    "CARD_TESTING",
    "LEGIT",
    "NEW_MERCHANT",
    "SimulatedTransaction",
    "Simulator",
    "SimulatorConfig",
    "parse_start",
]
