"""Shadow scoring: the candidate scores sampled requests after the champion answered.

The request thread appends one tuple to a bounded queue and returns; a
background thread scores each queued row with the candidate (one row per
run, so its latency compares with the champion's), records it for the arm
and logs it as a second prediction (request id ``<id>/shadow``, arm
``candidate``) for the label join. Like the prediction log, the thread wakes
every few milliseconds rather than per request, and a full queue skips the
shadow score (counted) instead of making a request wait.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from loopline.rollout.plan import CANDIDATE, shadow_request_id
from loopline.serving.features import FeatureStatus
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel

log = logging.getLogger(__name__)

BATCH_INTERVAL_S = 0.005
YIELD_EVERY = 4


class ShadowScorer:
    """A background thread scoring queued rows with the candidate of their plan."""

    def __init__(
        self,
        *,
        record: Callable[[str, str, float, float, float | None], bool],
        current_plan_id: Callable[[], str],
        log_prediction: Callable[[Any, int, str, Sequence[str]], None] | None,
        make_prediction: Callable[..., Any],
        metrics: ServingMetrics,
        queue_size: int,
    ) -> None:
        self.record = record
        self.current_plan_id = current_plan_id
        self.log_prediction = log_prediction
        self.make_prediction = make_prediction
        self.queue_size = queue_size
        self.scored = 0
        self._skipped = metrics.shadow.labels("skipped")
        self._scored = metrics.shadow.labels("scored")
        self._errors = metrics.shadow.labels("error")
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(
        self,
        plan_id: str,
        candidate: LoadedModel,
        row: tuple[Sequence[float], Sequence[FeatureStatus], bool],
        answered: Any,
        *,
        event_time_ms: int,
        event_id: str,
    ) -> None:
        """Queue the row (vector and statuses in feature-set order, degraded) of an
        answered request; never blocks."""
        if len(self._queue) >= self.queue_size or self._stopping.is_set():
            self._skipped.inc()
            return
        self._queue.append((plan_id, candidate, *row, answered, event_time_ms, event_id))

    @property
    def pending(self) -> int:
        return len(self._queue)

    def close(self, timeout_s: float = 5.0) -> None:
        """Score what is queued (within ``timeout_s``), then stop."""
        self._stopping.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        q = self._queue
        while True:
            n = 0
            while q:
                self._score(q.popleft())
                n += 1
                if n % YIELD_EVERY == 0:
                    time.sleep(0)  # a waiting request thread gets the GIL
            if self._stopping.is_set() and not q:
                return
            time.sleep(BATCH_INTERVAL_S)

    def _score(self, item: tuple[Any, ...]) -> None:
        plan_id, candidate, vector, statuses, degraded, answered, event_time_ms, event_id = item
        if plan_id != self.current_plan_id():
            self._skipped.inc()  # the plan ended (or changed) while this row waited
            return
        ordered = candidate.order(vector)
        try:
            out, wall, cpu = candidate.timed_probabilities(np.array([ordered], dtype=np.float32))
            score: float | None = float(out[0])
        except Exception as e:  # onnxruntime raises its own hierarchy
            log.warning("shadow: candidate v%s failed: %s", candidate.version, e)
            score, wall, cpu = None, 0.0, 0.0  # a failed run's time is never compared
        ok = self.record(CANDIDATE, "shadow", wall, cpu, score)
        if not ok:
            self._errors.inc()
            return
        self._scored.inc()
        self.scored += 1
        if self.log_prediction is None:
            return
        if degraded and candidate.permutation is not None:
            statuses = [statuses[k] for k in candidate.permutation]
        shadow = self.make_prediction(
            request_id=shadow_request_id(answered.request_id),
            score=score,
            model=candidate,
            features=ordered,
            statuses=statuses,
            degraded=degraded,
            entities=answered.entities,
            arm=CANDIDATE,
        )
        # The label join matches by event id; without one, the answered request's id.
        self.log_prediction(
            shadow, event_time_ms, event_id or answered.request_id, candidate.manifest.feature_names
        )
