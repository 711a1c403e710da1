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

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from loopline.rollout.plan import CANDIDATE, CHAMPION, shadow_request_id, shadow_sampled
from loopline.serving.batch_worker import BatchWorker
from loopline.serving.metrics import ServingMetrics
from loopline.serving.requests import FeatureRow, PredictInput, Prediction, prediction_of
from loopline.serving.rollout import Arms, RolloutFollower

log = logging.getLogger(__name__)

# The thread releases the GIL after this many model runs.
YIELD_EVERY = 4


class ShadowScorer:
    """A background thread scoring queued rows with the candidate of their plan."""

    def __init__(
        self,
        rollout: RolloutFollower,
        *,
        log_prediction: Callable[[Prediction, int, str, Sequence[str]], None] | None,
        metrics: ServingMetrics,
    ) -> None:
        self.rollout = rollout
        self.log_prediction = log_prediction
        self.scored = 0
        self._skipped = metrics.shadow.labels("skipped")
        self._scored = metrics.shadow.labels("scored")
        self._errors = metrics.shadow.labels("error")
        self._worker: BatchWorker[tuple[Any, ...]] = BatchWorker(
            "shadow-scorer",
            self._score,
            queue_size=rollout.settings.shadow_queue_size,
            yield_every=YIELD_EVERY,
        )

    def offer(self, arms: Arms, row: FeatureRow, answered: Prediction, inp: PredictInput) -> None:
        """Queue the candidate's score of a champion answer when the plan samples it; never
        blocks. ``row`` is the answered request's, in feature-set order."""
        plan, candidate = arms.plan, arms.candidate
        if plan is None or candidate is None or answered.arm != CHAMPION:
            return
        if not shadow_sampled(plan, answered.request_id):
            return
        item = (plan.plan_id, candidate, row, answered, inp.logged_time_ms(), inp.event_id)
        if not self._worker.offer(item):
            self._skipped.inc()

    @property
    def pending(self) -> int:
        return self._worker.pending

    def close(self, timeout_s: float = 5.0) -> None:
        """Score what is queued (within ``timeout_s``), then stop."""
        self._worker.stop(timeout_s)

    def _score(self, item: tuple[Any, ...]) -> None:
        plan_id, candidate, row, answered, event_time_ms, event_id = item
        running = self.rollout.arms.plan
        if running is None or running.plan_id != plan_id:
            self._skipped.inc()  # the plan ended (or changed) while this row waited
            return
        ordered = candidate.order(row[0])
        try:
            out, wall, cpu = candidate.timed_probabilities(np.array([ordered], dtype=np.float32))
            score: float | None = float(out[0])
        except Exception as e:  # onnxruntime raises its own hierarchy
            log.warning("shadow: candidate v%s failed: %s", candidate.version, e)
            score, wall, cpu = None, 0.0, 0.0  # a failed run's time is never compared
        ok = self.rollout.record(CANDIDATE, "shadow", wall, cpu, score)
        if not ok:
            self._errors.inc()
            return
        self._scored.inc()
        self.scored += 1
        if self.log_prediction is None:
            return
        assert score is not None  # a failed run is not ok
        shadow = prediction_of(
            candidate,
            score,
            row,
            request_id=shadow_request_id(answered.request_id),
            entities=answered.entities,
            arm=CANDIDATE,
            ordered=ordered,
        )
        # The label join matches by event id; without one, the answered request's id.
        self.log_prediction(
            shadow, event_time_ms, event_id or answered.request_id, candidate.manifest.feature_names
        )
