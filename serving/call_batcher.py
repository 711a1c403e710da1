"""Dynamic batching: concurrent calls scored together, in one store round trip and one model run.

Calls that arrive while a batch is being scored queue up; the next batch
takes all of them (up to ``max_batch``) at once. No thread of its own: the
first queued call's thread leads, runs the batch for everyone, hands each
call its own result and passes the lead to the next queued call. A lone call
therefore never waits (a batch of one, at the cost of two lock round trips),
and under load the batch grows with the queue, which is when it pays.

``max_wait_s`` (``serving.batch_max_wait_us``) lets a leader wait for more
calls before a batch that is not full, Triton's ``max_queue_delay``: it
trades latency for larger batches, is capped by a fifth of the leader's own
deadline, and is 0 (no waiting) by default.

Each call gets its own result or its own error: ``run_many`` returns one
outcome per item; if it raises, each call of the batch is run alone, so an
input that breaks the batch fails only its own call.

>>> batcher = CallBatcher(lambda items, budget: [x * 2 for x in items], max_batch=4)
>>> batcher.submit(21, None)
42
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from loopline.contracts.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

# A leader's wait for more calls takes at most this share of its deadline.
WAIT_SHARE_OF_BUDGET = 0.2


class _Call(Generic[T]):
    __slots__ = ("budget_s", "done", "gate", "item", "outcome")

    def __init__(self, item: T, budget_s: float | None) -> None:
        self.item = item
        self.budget_s = budget_s
        self.outcome: object = None
        self.done = False
        # Held while the call waits; released when it is answered or made leader.
        self.gate: threading.Lock | None = None


class CallBatcher(Generic[T, R]):
    """Scores items submitted from many threads in batches of up to ``max_batch``.

    ``run_many(items, budget_s)`` returns one outcome per item: a result, or
    an exception instance that :meth:`submit` raises in that item's caller.
    ``wait`` blocks for up to its argument (seconds) or until a batch fills
    (injectable so tests can see the bound without timing anything).
    """

    def __init__(
        self,
        run_many: Callable[[list[T], float | None], Sequence[R | BaseException]],
        *,
        max_batch: int,
        max_wait_s: float = 0.0,
        wait: Callable[[threading.Event, float], object] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(
                f"serving.batch_max_calls must be at least 1 (1: no batching), got {max_batch}"
            )
        self._run_many = run_many
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._wait = wait or (lambda event, timeout: event.wait(timeout))
        self._lock = threading.Lock()
        self._queue: list[_Call[T]] = []
        self._busy = False  # a leader is running (or about to run) a batch
        self._full = threading.Event()
        # Sizes of the batches run so far (for metrics and tests): count, calls.
        self.batches = 0
        self.calls = 0

    def submit(self, item: T, budget_s: float | None) -> R:
        """``item``'s result, scored in a batch with the calls queued meanwhile."""
        call: _Call[T] = _Call(item, budget_s)
        with self._lock:
            self._queue.append(call)
            if self._busy:
                gate = call.gate = threading.Lock()
                gate.acquire()
                if len(self._queue) >= self.max_batch:
                    self._full.set()
            else:
                self._busy = True
                gate = None
        if gate is not None:
            gate.acquire()  # answered, or made the leader
        if not call.done:
            self._lead(call)
        if isinstance(call.outcome, BaseException):
            raise call.outcome
        return call.outcome  # type: ignore[return-value]

    def _lead(self, me: _Call[T]) -> None:
        """Run one batch (``me`` first in it), answer it, pass the lead on."""
        try:
            self._gather(me)
            with self._lock:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self._full.clear()
            self._answer(batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._busy = False
            if successor is not None:
                assert successor.gate is not None
                successor.gate.release()  # not done: it leads the next batch

    def _gather(self, me: _Call[T]) -> None:
        """Wait (bounded) for the batch to fill when waiting is configured."""
        wait = self.max_wait_s
        if me.budget_s is not None:
            wait = min(wait, WAIT_SHARE_OF_BUDGET * me.budget_s)
        if wait > 0 and len(self._queue) < self.max_batch:
            self._wait(self._full, wait)

    def _answer(self, batch: list[_Call[T]]) -> None:
        budgets = [c.budget_s for c in batch if c.budget_s is not None]
        budget = min(budgets) if budgets else None
        items = [c.item for c in batch]
        try:
            outcomes: Sequence[object] = self._run_many(items, budget)
        except Exception:
            if len(batch) == 1:
                raise
            # One input may have broken the whole batch: each call alone.
            outcomes = [self._alone(c) for c in batch]
        self.batches += 1
        self.calls += len(batch)
        for c, outcome in zip(batch, outcomes, strict=True):
            c.outcome = outcome
            c.done = True
            if c.gate is not None:
                c.gate.release()

    def _alone(self, call: _Call[T]) -> object:
        try:
            return self._run_many([call.item], call.budget_s)[0]
        except Exception as e:
            return e
