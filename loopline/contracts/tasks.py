"""What a model predicts: the one list of tasks and its check.

>>> check_task("regression", "labels")
'regression'
>>> check_task("multiclass", "drift")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
loopline.contracts.errors.ConfigError: drift: task must be one of (...), not 'multiclass'
"""

from __future__ import annotations

from typing import Literal

from loopline.contracts.errors import ConfigError

Task = Literal["binary", "regression"]
# "binary": a 0/1 label and the positive class's probability; "regression": any finite number.
BINARY = "binary"
REGRESSION = "regression"
TASKS: tuple[str, ...] = (BINARY, REGRESSION)


def check_task(task: str, where: str = "model") -> str:
    """``task`` if it is one of :data:`TASKS`, else a :class:`ConfigError` naming ``where``."""
    if task not in TASKS:
        raise ConfigError(f"{where}: task must be one of {TASKS}, not {task!r}")
    return task
