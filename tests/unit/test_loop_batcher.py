"""Batching on the event loop: what arrives in one turn is one batch; errors stay per call.

Nothing is timed: calls are started in one turn with ``asyncio.gather``, and
the wait bound is checked on the timer the loop schedules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from serving_requests import predict_request
from serving_support import card_values, make_core, merchant_values

from loopline.contracts.errors import ConfigError, InvalidRequestError
from loopline.contracts.settings import ServingSettings
from loopline.serving.loop_batcher import LoopBatcher
from loopline.serving.v1_api import V1Handlers


class Scorer:
    """``run_many`` doubling each item; ``fail_on`` fails that item, ``raise_on`` the batch."""

    def __init__(self, fail_on: int | None = None, raise_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.budgets: list[float | None] = []
        self.fail_on, self.raise_on = fail_on, raise_on

    def __call__(self, items: list[int], budget_s: float | None) -> Sequence[object]:
        self.batches.append(list(items))
        self.budgets.append(budget_s)
        if self.raise_on in items and len(items) > 1:
            raise RuntimeError("this batch breaks")
        return [
            InvalidRequestError(f"item {x} is bad") if x in (self.fail_on, self.raise_on) else x * 2
            for x in items
        ]


def gather(batcher: LoopBatcher, items: list[int], budgets: list[float | None] | None = None):
    async def main() -> list[object]:
        calls = [
            batcher.submit(x, (budgets or [None] * len(items))[i]) for i, x in enumerate(items)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(main())


def test_calls_of_one_turn_are_one_batch_each_with_its_own_result() -> None:
    scorer = Scorer()
    batcher = LoopBatcher(scorer, max_batch=8)
    assert gather(batcher, [1, 2, 3], [1.0, 0.2, None]) == [2, 4, 6]
    assert scorer.batches == [[1, 2, 3]]
    assert scorer.budgets == [0.2]  # the shortest deadline of the batch


def test_batches_never_exceed_max_batch() -> None:
    scorer = Scorer()
    batcher = LoopBatcher(scorer, max_batch=2)
    assert gather(batcher, [1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
    assert scorer.batches == [[1, 2], [3, 4], [5]]
    assert (batcher.batches, batcher.calls) == (3, 5)


def test_one_calls_error_fails_only_that_call() -> None:
    results = gather(LoopBatcher(Scorer(fail_on=2), max_batch=8), [1, 2, 3])
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], InvalidRequestError)


def test_a_batch_that_raises_is_retried_call_by_call() -> None:
    scorer = Scorer(raise_on=2)
    results = gather(LoopBatcher(scorer, max_batch=8), [1, 2, 3])
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], InvalidRequestError)
    assert scorer.batches == [[1, 2, 3], [1], [2], [3]]


def test_the_wait_for_more_calls_is_bounded_by_the_setting_and_the_deadline() -> None:
    async def delay_of(batcher: LoopBatcher, budget: float | None) -> float:
        loop = asyncio.get_running_loop()
        scheduled: list[float] = []
        call_later = loop.call_later

        def spy(delay: float, callback, *args):  # type: ignore[no-untyped-def]
            scheduled.append(delay)
            return call_later(0, callback, *args)  # do not actually wait

        loop.call_later = spy  # type: ignore[method-assign]
        await batcher.submit(1, budget)
        return scheduled[0]

    batcher = LoopBatcher(Scorer(), max_batch=8, max_wait_s=0.002)
    assert asyncio.run(delay_of(batcher, None)) == 0.002
    assert asyncio.run(delay_of(batcher, 0.005)) == pytest.approx(0.001)  # a fifth of 5 ms


def test_concurrent_async_predict_calls_get_their_own_predictions(tmp_path) -> None:
    kit = make_core(tmp_path, batch_max_calls=8)
    now = time.time()
    for i in range(5):
        kit.store.put("card", f"c{i}", card_values(seed=float(i)), now)
        kit.store.put("merchant", f"m{i}", merchant_values(), now)
    handlers = V1Handlers(kit.core, 1 << 20)
    requests = [
        predict_request(
            entities={"card_id": f"c{i}", "merchant_id": f"m{i}"},
            fields={"amount": 10.0 + i},
            event_time_ms=int(now * 1000),
        )
        for i in range(5)
    ]
    requests.append(predict_request(fields={"amount": float("nan")}))  # refused on its own
    alone = [handlers.predict(r, 1.0) for r in requests[:5]]
    kit.store.calls.clear()

    async def main() -> list[object]:
        calls = [handlers.predict_async(r, 1.0) for r in requests]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    for got, expected in zip(results[:5], alone, strict=True):
        assert got.score == pytest.approx(expected.score, abs=1e-6)
        assert [f.value for f in got.features] == pytest.approx(
            [f.value for f in expected.features]
        )
    assert "must be finite" in str(results[5])
    assert handlers.loop_batcher is not None
    # One turn, one batch: one store round trip for the five good calls.
    assert handlers.loop_batcher.batches == 1
    assert len(kit.store.calls) == 1


def test_the_transport_setting_names_its_choices() -> None:
    assert ServingSettings(transport="asyncio").transport == "asyncio"
    with pytest.raises(ConfigError, match=r"serving\.transport is 'aio'; use one of"):
        ServingSettings(transport="aio")
    with pytest.raises(ConfigError, match=r"serving\.batch_max_calls is 0"):
        ServingSettings(batch_max_calls=0)
