"""How a training reports what it is doing (the CLI renders it; tests ignore it)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def stage(self, name: str) -> None:
        """A new step starts (loading data, training, exporting, ...)."""

    def info(self, message: str) -> None:
        """A fact worth showing (rows loaded, parity difference, ...)."""

    def iteration(self, i: int, total: int, valid_log_loss: float) -> None:
        """Boosting progress."""


class SilentProgress:
    """Reports nothing."""

    def stage(self, name: str) -> None:
        return None

    def info(self, message: str) -> None:
        return None

    def iteration(self, i: int, total: int, valid_log_loss: float) -> None:
        return None
