"""Rollout plans started and aborted with the real CLI (``loopline models rollout``),
until the server reports that it follows them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopline.cli import main as loopline_cli
from support.rollout_metrics import running_plans
from support.server import scrape

SHADOW_SHARE = 1.0
CANARY_SHARE = 0.5
FOLLOW_TIMEOUT_S = 30.0


class Plans:
    """Start and abort plans with the real CLI; wait until the server follows."""

    def __init__(self, config: Path, registry: Any, model: str, candidate: str, metrics_port: int):
        self.config = config
        self.registry = registry
        self.model = model
        self.candidate = candidate
        self.metrics_port = metrics_port
        self.follow_s: list[float] = []

    def _run(self, *argv: str) -> None:
        code = loopline_cli(["--config", str(self.config), "models", "rollout", *argv])
        if code != 0:
            raise SystemExit(f"loopline models rollout {' '.join(argv)}: exit code {code}")

    def running(self) -> Any:
        plan = self.registry.rollout(self.model)
        return plan if plan is not None and plan.running else None

    def set(self, mode: str) -> str:
        """End any running plan, start ``mode``'s; returns its plan id ('' for none)."""
        plan = self.running()
        if plan is not None:
            self._run("abort", "--reason", "benchmark phase over")
            self._wait(lambda ids: plan.plan_id not in ids, f"the end of {plan.plan_id}")
        if mode == "none":
            return ""
        share = SHADOW_SHARE if mode == "shadow" else CANARY_SHARE
        t0 = time.perf_counter()
        self._run("start", self.candidate, "--mode", mode, "--share", str(share))
        plan_id = self.running().plan_id
        self._wait(lambda ids: plan_id in ids, f"plan {plan_id}")
        self.follow_s.append(time.perf_counter() - t0)
        # rollout_info is a max over the workers: give the slower one a moment too.
        time.sleep(1.0)
        return plan_id

    def _wait(self, done: Callable[[set[str]], bool], what: str) -> None:
        deadline = time.monotonic() + FOLLOW_TIMEOUT_S
        while not done(running_plans(scrape(self.metrics_port)["samples"])):
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not follow {what} in {FOLLOW_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
