"""The trainer's refusals, under the shared error root."""

from __future__ import annotations

from loopline.contracts.errors import ModelError


class InsufficientDataError(ModelError):
    """The training window holds too few rows (or a single class) to train on."""


class ParityError(ModelError):
    """The exported ONNX model does not give the native model's probabilities."""

    def __init__(self, message: str, max_abs_diff: float) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff
