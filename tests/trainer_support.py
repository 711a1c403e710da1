"""Trainer tests: settings for quick training in a temp dir, the training set of a synthetic
history, the CLI as the lead runs it, and an announcer that keeps what it would send."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fraud_repo import FRAUD_FEATURES
from synthetic_fraud import Transaction, records

from loopline.contracts.errors import DeliveryError
from loopline.contracts.schemas import ModelUpdate, Outcome
from loopline.contracts.settings import Settings
from loopline.trainer.bootstrap import build_training_set
from loopline.trainer.dataset import TrainingSet

# Margins so wide that every challenger passes the gate, for tests about what follows it.
GATE_ALWAYS_PASSES = {"gate_auc_margin": 1.0, "gate_log_loss_margin": 1.0, "gate_brier_margin": 1.0}


def quick_trainer_settings(base: Settings, tmp_path: Path, **trainer: Any) -> Settings:
    """``base`` training few small trees on one thread, its files under ``tmp_path``.

    Labels mature after an hour, as synthetic_history's outcomes do.
    """
    fields: dict[str, Any] = {
        "offline_store": tmp_path / "offline",
        "state_dir": tmp_path / "state",
        "num_trees": 40,
        "early_stopping_rounds": 10,
        "num_threads": 1,
        **trainer,
    }
    return replace(
        base,
        trainer=replace(base.trainer, **fields),
        registry=replace(base.registry, path=tmp_path / "registry"),
        labels=replace(base.labels, maturity_s=3600),
    )


def training_set_of(
    txs: Sequence[Transaction], outcomes: Sequence[Outcome], window_hours: int
) -> TrainingSet:
    """The fraud example's training set of a synthetic history, labels mature after an hour."""
    return build_training_set(
        FRAUD_FEATURES, records(txs), list(outcomes), maturity_s=3600, window_hours=window_hours
    )


def cli_parser(*registers: Callable[[Any], None]) -> argparse.ArgumentParser:
    """``loopline`` with the subcommands ``registers`` add, in order."""
    parser = argparse.ArgumentParser(prog="loopline")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in registers:
        register(sub)
    return parser


def run_cli(settings: Settings, argv: tuple[str, ...], *registers: Callable[[Any], None]) -> int:
    """``loopline <argv>`` run as the lead's CLI runs it (settings on the parsed args)."""
    args = cli_parser(*registers).parse_args(argv)
    args.settings = settings
    return args.func(args)


class Announcements:
    """Collects what a Kafka announcer would send (the real one is tested on Kafka).

    The first ``failures`` announcements fail as an unacknowledged send does.
    """

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[ModelUpdate] = []
        self.failures = failures

    def announce(self, update: ModelUpdate) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("model-updates: not acknowledged within 30 s")
        self.sent.append(update)
