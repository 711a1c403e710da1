"""`simulate` puts exactly the repo simulator's stream on Kafka, every delivery acknowledged."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fraud_repo import PROJECT, ROOT, transaction_parser
from kafka_support import kafka_env, read_to_end

from loopline.contracts.schemas import Outcome, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.simulation import SimulationConfig
from loopline.simulation.api import load_simulation
from loopline.simulation.timeline import Routes, timeline

pytestmark = pytest.mark.integration


def _read_all(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    return [(m.key(), m.value()) for m in read_to_end(settings, topic)]


@pytest.mark.parametrize("entry", ["loopline.cli", "loopline.streams"])
def test_simulate_produces_the_repos_stream(
    isolated_settings: Settings, topics: Topics, entry: str
) -> None:
    args = ["--seed", "5", "--start", "1700000000000", "--duration", "20", "--rate", "150"]
    args += ["--param", "fraud_rate=0.05", "--outcome-delay", "3", "--speed", "0", "--quiet"]
    env = {**os.environ, **kafka_env(isolated_settings)}
    done = subprocess.run(
        [sys.executable, "-m", entry, "simulate", "--repo", str(ROOT), *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    config = SimulationConfig(
        seed=5,
        start_ms=1_700_000_000_000,
        duration_s=20,
        rate=150,
        outcome_delay_s=3,
        params={"fraud_rate": 0.05},
    )
    routes = Routes.of(PROJECT, PROJECT.model(), topics)
    expected = list(timeline(load_simulation(ROOT).simulate(config), routes))
    n_events = sum(1 for m in expected if m.event is not None)
    assert f"produced {n_events} events" in done.stdout
    for topic in (topics.events, topics.outcomes):
        got = _read_all(isolated_settings, topic)
        want = [(m.key.encode(), m.value) for m in expected if m.topic == topic]
        assert sorted(got) == sorted(want) and want
    # Payloads are valid for every consumer: the features flow's parser, the outcome schema.
    first = next(m for m in expected if m.event is not None)
    transaction_parser().parse(first.value)
    decode(Outcome, next(m for m in expected if m.outcome is not None).value)
