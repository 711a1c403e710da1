"""Waiting for something a background thread or process does."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = 20.0,
    what: str | Callable[[], str] = "condition",
    *,
    interval_s: float = 0.05,
) -> None:
    """Return once ``predicate()`` is true; fail the test after ``timeout_s``.

    ``what`` names what was awaited; a callable is asked only on failure (a log tail).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    described = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout_s} s waiting for {described}")
