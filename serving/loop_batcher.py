"""Dynamic batching on an event loop: the calls that arrive together are scored together.

The asyncio transport's counterpart of :mod:`~loopline.serving.call_batcher`.
Each call queues its item and awaits a future; the first call of an empty
queue schedules one flush for the loop's next turn, so every call gRPC
delivered in the same turn lands in the same batch (up to ``max_batch``).
The flush scores the batch on the loop itself and resolves the futures: no
thread hands a batch to another, which is what the thread-pool batcher paid
for on every queued call.

``max_wait_s`` (``serving.batch_max_wait_us``) delays a flush that is not
full by that long, capped by a fifth of the first call's deadline; 0 (the
default) never waits.

Each call gets its own outcome: ``run_many`` returns one per item (a result,
or an exception instance raised in that call); if it raises, each item is run
alone, so an input that breaks the batch fails only its own call.

>>> import asyncio
>>> batcher = LoopBatcher(lambda items, budget: [x * 2 for x in items], max_batch=4)
>>> async def three_calls():
...     return await asyncio.gather(*(batcher.submit(x, None) for x in (1, 2, 3)))
>>> asyncio.run(three_calls()), batcher.batches, batcher.calls
([2, 4, 6], 1, 3)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from loopline.contracts.errors import ConfigError
from loopline.serving.call_batcher import WAIT_SHARE_OF_BUDGET

T = TypeVar("T")
R = TypeVar("R")


class LoopBatcher(Generic[T, R]):
    """Scores items submitted by coroutines of one event loop in batches of ``max_batch``."""

    def __init__(
        self,
        run_many: Callable[[list[T], float | None], Sequence[R | BaseException]],
        *,
        max_batch: int,
        max_wait_s: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(
                f"serving.batch_max_calls must be at least 1 (1: no batching), got {max_batch}"
            )
        self._run_many = run_many
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: list[tuple[T, float | None, asyncio.Future[R]]] = []
        self._scheduled = False
        # Sizes of the batches run so far (for metrics and tests): count, calls.
        self.batches = 0
        self.calls = 0

    async def submit(self, item: T, budget_s: float | None) -> R:
        """``item``'s result, scored with the calls that arrived in the same turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, budget_s, future))
        if not self._scheduled:
            self._schedule(loop, budget_s)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop, budget_s: float | None) -> None:
        self._scheduled = True
        wait = self.max_wait_s
        if budget_s is not None:
            wait = min(wait, WAIT_SHARE_OF_BUDGET * budget_s)
        if wait > 0 and len(self._queue) < self.max_batch:
            loop.call_later(wait, self._flush)
        else:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch = self._queue[: self.max_batch]
        del self._queue[: self.max_batch]
        self._scheduled = False
        if self._queue:  # more than a batch arrived: the rest go next turn
            self._schedule(asyncio.get_running_loop(), self._queue[0][1])
        live = [entry for entry in batch if not entry[2].cancelled()]
        if not live:
            return
        budgets = [b for _, b, _ in live if b is not None]
        items = [item for item, _, _ in live]
        try:
            outcomes: Sequence[object] = self._run_many(items, min(budgets) if budgets else None)
        except Exception:
            outcomes = [self._alone(item, budget) for item, budget, _ in live]
        self.batches += 1
        self.calls += len(live)
        for (_, _, future), outcome in zip(live, outcomes, strict=True):
            if future.cancelled():  # the call ended (deadline, cancel) while scored
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)  # type: ignore[arg-type]

    def _alone(self, item: T, budget_s: float | None) -> object:
        try:
            return self._run_many([item], budget_s)[0]
        except Exception as e:
            return e
