"""Redis kill -9 and restart with persistence off (the local stack's default): it comes
back empty, the features flow rewrites only the entities new events touch, and
``loopline backfill`` rebuilds the rest from the events topic (timed). Otherwise the
``redis_kill`` scenario."""

from __future__ import annotations

from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_scenarios.redis_kill import run_redis_kill

NAME = "redis_wipe"
SUMMARY = "Redis kill -9 + restart without persistence: lost values found, loopline backfill fixes"


def run(options: ChaosOptions) -> ScenarioResult:
    return run_redis_kill(options, NAME, persistence=False)
