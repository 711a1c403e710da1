"""Rollout tests: a registry of stand-in versions, labeled examples as the arms would earn
them, an in-memory label source and ``loopline models rollout`` run in process."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from trainer_support import run_cli

from loopline.contracts.schemas import LabeledExample, encode
from loopline.contracts.settings import Settings
from loopline.registry.directory import DirectoryRegistry, ManifestFields
from loopline.rollout.plan import RolloutPlan
from loopline.trainer import commands
from loopline.trainer.rollout import commands as rollout_commands


def with_registry(base: Settings, path: Path) -> Settings:
    """``base`` with its model registry at ``path``."""
    return replace(base, registry=replace(base.registry, path=path))


def registry_with_versions(
    root: Path, model: str = "fraud", versions: int = 3, feature_set: str = "fraud"
) -> DirectoryRegistry:
    """A registry at ``root`` holding ``versions`` stand-in models of ``model``; v1 is champion.

    The bytes are no ONNX model: rollout tests move aliases and plans, they never load one.
    """
    reg = DirectoryRegistry(root)
    for i in range(versions):
        reg.publish(model, f"onnx-{i}".encode(), ManifestFields(feature_set, "f" * 64, ["a"]))
    reg.set_alias(model, "champion", "1")
    return reg


def labeled_examples(
    model: str,
    version: str,
    n: int,
    t_ms: int,
    signal: float,
    *,
    seed: str | None = None,
    request_id: str = "r{i}",
    event_id: str = "e{i}",
    fingerprint: str = "f" * 64,
) -> list[bytes]:
    """``n`` encoded LabeledExamples scored by ``version``, every third one positive.

    ``signal`` separates the classes' scores (0: not at all, < 0: inverted). The
    scores' noise is seeded by ``seed`` (default: version, time and signal), and
    ``request_id``/``event_id`` are formatted with ``version``, ``t_ms`` and ``i``:
    a watcher counts a request id once, so tests that send several batches keep
    them apart.
    """
    rng = random.Random(f"{version}-{t_ms}-{signal}" if seed is None else seed)
    out = []
    for i in range(n):
        y = int(i % 3 == 0)
        score = min(max(0.5 + (signal if y else -signal) + rng.gauss(0, 0.15), 0.01), 0.99)
        ids = {"version": version, "t_ms": t_ms, "i": i}
        ex = LabeledExample(
            request_id.format(**ids), event_id.format(**ids), model, version, fingerprint,
            {}, [], score, y, t_ms, t_ms,
        )  # fmt: skip
        out.append(encode(ex))
    return out


class ListSource:
    """A label source handing out whatever was added to ``pending`` since the last poll."""

    def __init__(self, plan: RolloutPlan | None = None) -> None:
        self.plan = plan
        self.pending: list[bytes] = []
        self.closed = False

    def poll(self, timeout_s: float) -> list[bytes]:
        out, self.pending = self.pending, []
        return out

    def close(self) -> None:
        self.closed = True


def rollout_cli(settings: Settings, *argv: str) -> int:
    """``loopline models rollout <argv>`` in process, exactly as the CLI parses it."""
    argv = ("models", "rollout", *argv)
    return run_cli(settings, argv, commands.register, rollout_commands.register)
