"""Dynamic batching of concurrent calls: per-call results, batch bounds, the wait bound, errors.

Concurrency is made deterministic: the first batch blocks inside ``run_many``
until the test has queued every other call, so the next batch's content is
known. Nothing is timed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from polling import wait_until
from serving_requests import predict_request
from serving_support import card_values, make_core, merchant_values

from loopline.contracts.errors import InvalidRequestError, UnavailableError
from loopline.contracts.settings import RolloutSettings
from loopline.serving.call_batcher import WAIT_SHARE_OF_BUDGET, CallBatcher
from loopline.serving.v1_api import V1Handlers


class Scorer:
    """``run_many`` doubling each item; the first batch waits for ``release``."""

    def __init__(self, fail_on: int | None = None, raise_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.budgets: list[float | None] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on
        self.raise_on = raise_on

    def __call__(self, items: list[int], budget_s: float | None) -> Sequence[object]:
        self.batches.append(list(items))
        self.budgets.append(budget_s)
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(20)
        if self.raise_on in items and len(items) > 1:
            raise RuntimeError("this batch breaks")
        return [
            InvalidRequestError(f"item {x} is bad") if x in (self.fail_on, self.raise_on) else x * 2
            for x in items
        ]


def run_concurrently(
    batcher: CallBatcher,
    scorer: Scorer,
    items: list[int],
    budgets: list[float | None] | None = None,
) -> dict[int, object]:
    """Submit ``items[0]`` first (it leads and blocks), then the rest; every call's outcome."""
    budgets = budgets or [None] * len(items)
    outcomes: dict[int, object] = {}

    def call(item: int, budget: float | None) -> None:
        try:
            outcomes[item] = batcher.submit(item, budget)
        except Exception as e:
            outcomes[item] = e

    threads = [threading.Thread(target=call, args=(items[0], budgets[0]))]
    threads[0].start()
    assert scorer.entered.wait(20)
    for item, budget in zip(items[1:], budgets[1:], strict=True):
        t = threading.Thread(target=call, args=(item, budget))
        t.start()
        threads.append(t)
    # The first call left the queue when its batch started.
    wait_until(lambda: len(batcher._queue) == len(items) - 1, what="every call queued")
    scorer.release.set()
    for t in threads:
        t.join(20)
    return outcomes


def test_a_lone_call_is_a_batch_of_one_and_never_waits() -> None:
    waits: list[float] = []
    scorer = Scorer()
    scorer.release.set()
    batcher = CallBatcher(scorer, max_batch=8, max_wait_s=0.0, wait=lambda e, t: waits.append(t))
    assert [batcher.submit(i, 0.01) for i in (1, 2, 3)] == [2, 4, 6]
    assert scorer.batches == [[1], [2], [3]] and waits == []


def test_calls_queued_during_a_batch_are_scored_together_each_getting_its_own_result() -> None:
    scorer = Scorer()
    batcher = CallBatcher(scorer, max_batch=16)
    items = list(range(1, 9))
    outcomes = run_concurrently(batcher, scorer, items)
    assert outcomes == {x: 2 * x for x in items}
    assert scorer.batches[0] == [1]
    assert sorted(scorer.batches[1]) == items[1:]  # one batch for the seven queued calls
    assert (batcher.batches, batcher.calls) == (2, 8)


def test_batches_never_exceed_max_batch() -> None:
    scorer = Scorer()
    batcher = CallBatcher(scorer, max_batch=3)
    items = list(range(1, 11))
    outcomes = run_concurrently(batcher, scorer, items)
    assert outcomes == {x: 2 * x for x in items}
    assert max(len(b) for b in scorer.batches) == 3
    assert sorted(x for b in scorer.batches for x in b) == items


def test_one_calls_error_does_not_fail_the_others() -> None:
    scorer = Scorer(fail_on=5)
    batcher = CallBatcher(scorer, max_batch=16)
    outcomes = run_concurrently(batcher, scorer, [1, 2, 5, 7])
    assert isinstance(outcomes.pop(5), InvalidRequestError)
    assert outcomes == {1: 2, 2: 4, 7: 14}


def test_a_batch_that_raises_is_retried_call_by_call() -> None:
    scorer = Scorer(raise_on=6)
    batcher = CallBatcher(scorer, max_batch=16)
    outcomes = run_concurrently(batcher, scorer, [1, 3, 6, 9])
    assert str(outcomes.pop(6)) == "item 6 is bad"
    assert outcomes == {1: 2, 3: 6, 9: 18}
    # The broken batch, then each of its calls alone.
    assert sorted(scorer.batches[1]) == [3, 6, 9]
    assert sorted(map(tuple, scorer.batches[2:])) == [(3,), (6,), (9,)]


def test_a_batch_runs_within_the_shortest_deadline_of_its_calls() -> None:
    scorer = Scorer()
    batcher = CallBatcher(scorer, max_batch=16)
    run_concurrently(batcher, scorer, [1, 2, 3, 4], budgets=[0.5, 0.2, None, 0.05])
    assert scorer.budgets == [0.5, 0.05]


def test_the_wait_for_more_calls_is_bounded_by_the_setting_and_the_deadline() -> None:
    waits: list[float] = []
    scorer = Scorer()
    scorer.release.set()
    batcher = CallBatcher(scorer, max_batch=8, max_wait_s=0.002, wait=lambda e, t: waits.append(t))
    batcher.submit(1, None)  # no deadline: the setting bounds it
    batcher.submit(2, 1.0)  # a long deadline: still the setting
    batcher.submit(3, 0.005)  # a short one: a share of it
    assert waits == [0.002, 0.002, pytest.approx(WAIT_SHARE_OF_BUDGET * 0.005)]


def test_a_full_queue_is_taken_without_waiting() -> None:
    waits: list[float] = []
    scorer = Scorer()
    batcher = CallBatcher(scorer, max_batch=3, max_wait_s=0.05, wait=lambda e, t: waits.append(t))
    outcomes = run_concurrently(batcher, scorer, [1, 2, 3, 4])
    assert outcomes == {1: 2, 2: 4, 3: 6, 4: 8}
    # The first leader waited (alone); the next found three queued (full) and did not.
    assert waits == [0.05]
    assert [len(b) for b in scorer.batches] == [1, 3]


def test_the_wait_ends_when_the_batch_fills() -> None:
    scorer = Scorer()
    scorer.release.set()
    woken: list[bool] = []

    def wait(event: threading.Event, timeout: float) -> None:
        woken.append(event.wait(20))  # would take 20 s unless the batch fills

    batcher = CallBatcher(scorer, max_batch=2, max_wait_s=20.0, wait=wait)
    threads = [threading.Thread(target=batcher.submit, args=(1, None))]
    threads[0].start()
    wait_until(lambda: len(batcher._queue) == 1, what="the leader waiting")
    threads.append(threading.Thread(target=batcher.submit, args=(2, None)))
    threads[1].start()
    for t in threads:
        t.join(20)
    assert woken == [True] and scorer.batches == [[1, 2]]


def test_concurrent_predict_calls_get_their_own_predictions(tmp_path) -> None:
    # A rollout follower with no plan: answers are counted per arm, as in a server.
    kit = make_core(tmp_path, rollout=RolloutSettings(), batch_max_calls=8)
    now = time.time()
    for i in range(6):
        kit.store.put("card", f"c{i}", card_values(seed=float(i)), now)
        kit.store.put("merchant", f"m{i}", merchant_values(), now)
    handlers = V1Handlers(kit.core, 1 << 20)
    assert handlers.batcher is not None
    requests = [
        predict_request(
            entities={"card_id": f"c{i}", "merchant_id": f"m{i}"},
            fields={"amount": 10.0 + i},
            event_time_ms=int(now * 1000),
        )
        for i in range(6)
    ]
    requests.append(predict_request(fields={"amount": float("nan")}))  # refused on its own
    alone = [handlers._response(kit.core.predict(handlers._input(r))) for r in requests[:6]]
    results: dict[int, object] = {}
    kit.store.calls.clear()

    def call(i: int) -> None:
        try:
            results[i] = handlers.predict(requests[i], 1.0)
        except InvalidRequestError as e:
            results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for i, expected in enumerate(alone):
        got = results[i]
        assert got.score == pytest.approx(expected.score, abs=1e-6)
        values = [f.value for f in got.features]
        assert values == pytest.approx([f.value for f in expected.features])
    assert "must be finite" in str(results[6])
    # Every call answered, in at most one store round trip per batch (a batch of
    # only the refused call makes none).
    assert handlers.batcher.calls == len(requests)
    assert len(kit.store.calls) <= handlers.batcher.batches <= len(requests)
    # Each answer counted once per arm, batched or not (6 alone, then 6 concurrent).
    answered = kit.metrics.registry.get_sample_value(
        "loopline_serving_arm_calls_total",
        {"arm": "champion", "path": "answer", "result": "ok"},
    )
    assert answered == 12


def test_batching_off_scores_each_call_alone(tmp_path) -> None:
    kit = make_core(tmp_path, batch_max_calls=1)
    assert V1Handlers(kit.core, 1 << 20).batcher is None


def test_calls_waiting_in_a_batch_when_a_shutdown_begins_still_finish(tmp_path) -> None:
    kit = make_core(tmp_path, batch_max_calls=8)
    handlers = V1Handlers(kit.core, 1 << 20)
    entered, release = threading.Event(), threading.Event()
    mget = kit.store.mget

    def slow_mget(keys: Sequence[bytes], timeout_s: float) -> list[bytes | None]:
        entered.set()
        assert release.wait(20)
        return mget(keys, timeout_s)

    kit.store.mget = slow_mget  # type: ignore[method-assign]
    results: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            results[i] = handlers.predict(predict_request(), 5.0)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    threads[0].start()
    assert entered.wait(20)
    for t in threads[1:]:
        t.start()
    assert handlers.batcher is not None
    wait_until(lambda: len(handlers.batcher._queue) == 2, what="two calls queued")
    kit.core.models.draining = True  # a graceful shutdown begins
    with pytest.raises(UnavailableError, match="shutting down"):
        handlers.predict(predict_request(), 5.0)  # a new call is refused
    release.set()
    for t in threads:
        t.join(20)
    assert [type(results[i]).__name__ for i in range(3)] == ["PredictResponse"] * 3
