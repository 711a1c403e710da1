"""The label join for one shard of the join-key space: predictions meet outcomes.

Pure logic (no dataflow engine, no clock of its own): a :class:`JoinShard`
takes decoded predictions and outcomes in any order and watermark ticks, and
returns labeled examples, dead letters and counts.

- A prediction is labeled by its outcome (resolution ``"outcome"``) as soon as
  both have been seen, whichever came first: each side waits in a buffer.
- A prediction still unlabeled when the watermark passes its window time plus
  ``maturity_ms`` is resolved by the timeout policy (resolution ``"timeout"``;
  fraud: no chargeback within the window = legitimate, label 0), or dropped
  when the policy is ``drop`` (counted). A regression label has no default
  value, so a regression flow always drops (the flow's config enforces it).
- An outcome stays buffered ``outcome_retention_ms`` past its window time, so
  every prediction of the same event (shadow arms, a late log) gets it; one
  that matched nothing by then expires (counted as ``unmatched``, not an
  error). A duplicate outcome is ignored (the first label wins); an outcome
  arriving after its event's predictions timed out is counted as ``late`` (no
  correction is emitted: choose the maturity window accordingly).
- A prediction log seen again (same ``request_id``) within
  ``dedup_retention_ms`` of its resolution is ignored (``duplicate``).
- Both buffers are bounded: beyond ``max_predictions`` / ``max_outcomes`` the
  entry due soonest is evicted to the dead-letter topic with its original
  bytes (reason ``evicted``), so nothing is lost silently.

``labeled_at_ms`` is the window time at which the label became known: the
later of the two window times for an outcome, the deadline for a timeout
(event time by default; deterministic, so a replay reproduces it).

>>> from loopline.contracts.schemas import Outcome, PredictionLog, encode
>>> from loopline.streams.labels.inputs import SourceRecord, decode_outcome, decode_prediction
>>> def pred(rid, eid, t):
...     log = PredictionLog(rid, "fraud", "1", "fraud", "fp", {}, [0.5], 0.1, t, t, event_id=eid)
...     return decode_prediction(SourceRecord("predictions", 0, 0, None, encode(log)))
>>> def outcome(eid, label, t):
...     return decode_outcome(SourceRecord("outcomes", 0, 0, None, encode(Outcome(eid, label, t))))
>>> shard = JoinShard(JoinPolicy(maturity_ms=60_000))
>>> out = shard.process([outcome("e1", 1, 5_000), pred("r1", "e1", 1_000), pred("r2", "e2", 2_000)])
>>> [(e.request_id, e.label, e.resolution, e.labeled_at_ms) for e in out.examples]
[('r1', 1, 'outcome', 5000)]
>>> out = shard.process([Tick(62_000)])  # r2's window (2 s + 60 s) has passed
>>> [(e.request_id, e.label, e.resolution, e.labeled_at_ms) for e in out.examples]
[('r2', 0, 'timeout', 62000)]
>>> shard.process([outcome("e2", 1, 70_000)]).counts
{('outcomes', 'accepted'): 1, ('outcomes', 'late'): 1}
"""

from __future__ import annotations

import heapq
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import DeadLetter, LabeledExample, PredictionLog, decode
from loopline.streams.labels.inputs import (
    REASON_EVICTED,
    REASON_INVALID,
    OutcomeIn,
    PredictionIn,
    Tick,
)

SNAPSHOT_FORMAT = 1
PREDICTIONS = "predictions"
OUTCOMES = "outcomes"
OUTCOME = "outcome"
TIMEOUT = "timeout"
TIMEOUT_POLICIES = {"negative": 0, "positive": 1, "drop": None}

JoinInput: TypeAlias = PredictionIn | OutcomeIn | Tick


@dataclass(frozen=True)
class JoinPolicy:
    """How long each side waits, what a timeout means, and the state bounds (per shard)."""

    maturity_ms: int
    timeout_label: int | None = 0  # None: drop predictions that time out (regression)
    outcome_retention_ms: int = 3_600_000
    dedup_retention_ms: int = 600_000
    max_predictions: int = 1_000_000
    max_outcomes: int = 1_000_000
    # Named in dead letters of evicted entries.
    predictions_topic: str = PREDICTIONS
    outcomes_topic: str = OUTCOMES


class _Pending(NamedTuple):
    request_id: str
    join_key: str
    t_ms: int
    deadline_ms: int
    raw: bytes
    partition: int
    offset: int
    key: bytes | None


class _Outcome(NamedTuple):
    label: float
    t_ms: int
    expires_ms: int
    matched: int
    raw: bytes
    partition: int
    offset: int
    key: bytes | None


@dataclass
class JoinOutput:
    """What one call of :meth:`JoinShard.process` produced."""

    examples: list[LabeledExample] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (stream, result) -> count; see loopline_labels_records
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, stream: str, result: str, n: int = 1) -> None:
        self.counts[stream, result] = self.counts.get((stream, result), 0) + n


class JoinShard:
    """Buffered predictions and outcomes of one shard; see the module docstring."""

    def __init__(self, policy: JoinPolicy, snapshot: bytes | None = None) -> None:
        self.policy = policy
        self.watermark_ms: int | None = None
        # join key -> predictions waiting for its outcome
        self._pending: dict[str, list[_Pending]] = {}
        self._pending_ids: dict[str, _Pending] = {}
        self._deadlines: list[tuple[int, str]] = []  # (deadline, request_id), lazy deletion
        self._outcomes: dict[str, _Outcome] = {}
        self._outcome_expiry: list[tuple[int, str]] = []  # (expires, event_id), lazy deletion
        # request_id -> forget at (resolved: duplicates are dropped)
        self._done: dict[str, int] = {}
        self._done_expiry: list[tuple[int, str]] = []
        # join key -> forget at (timed out: a later outcome is late)
        self._timed_out: dict[str, int] = {}
        self._timed_out_expiry: list[tuple[int, str]] = []
        if snapshot is not None:
            self._restore(snapshot)

    @property
    def pending_predictions(self) -> int:
        return len(self._pending_ids)

    @property
    def pending_outcomes(self) -> int:
        return len(self._outcomes)

    def process(self, items: Iterable[JoinInput]) -> JoinOutput:
        """Apply inputs in order; ticks resolve whatever their watermark has matured."""
        out = JoinOutput()
        for item in items:
            if isinstance(item, PredictionIn):
                self._on_prediction(item, out)
            elif isinstance(item, OutcomeIn):
                self._on_outcome(item, out)
            elif self.watermark_ms is None or item.watermark_ms > self.watermark_ms:
                # A Tick (JoinInput holds nothing else): the watermark moved.
                self.watermark_ms = item.watermark_ms
                self._advance(item.watermark_ms, out)
        if self.watermark_ms is not None:
            # Also resolves predictions that arrived after their window had passed.
            self._advance(self.watermark_ms, out)
        return out

    # -- inputs ---------------------------------------------------------------------
    def _on_prediction(self, p: PredictionIn, out: JoinOutput) -> None:
        if p.request_id in self._pending_ids or p.request_id in self._done:
            out.count(PREDICTIONS, "duplicate")
            return
        out.count(PREDICTIONS, "accepted")
        entry = _Pending(
            p.request_id,
            p.join_key,
            p.t_ms,
            p.t_ms + self.policy.maturity_ms,
            p.raw,
            p.partition,
            p.offset,
            p.key,
        )
        o = self._outcomes.get(p.join_key)
        if o is not None:
            self._outcomes[p.join_key] = o._replace(matched=o.matched + 1)
            self._resolve(entry, o.label, OUTCOME, max(p.t_ms, o.t_ms), out)
            return
        self._pending.setdefault(p.join_key, []).append(entry)
        self._pending_ids[p.request_id] = entry
        heapq.heappush(self._deadlines, (entry.deadline_ms, p.request_id))
        while len(self._pending_ids) > self.policy.max_predictions:
            self._evict_prediction(out)

    def _on_outcome(self, o: OutcomeIn, out: JoinOutput) -> None:
        if o.event_id in self._outcomes:
            out.count(OUTCOMES, "duplicate")
            return
        out.count(OUTCOMES, "accepted")
        if o.event_id in self._timed_out:
            out.count(OUTCOMES, "late")
        waiting = self._pending.pop(o.event_id, [])
        for entry in waiting:
            del self._pending_ids[entry.request_id]
            self._resolve(entry, o.label, OUTCOME, max(entry.t_ms, o.t_ms), out)
        expires = o.t_ms + self.policy.outcome_retention_ms
        self._outcomes[o.event_id] = _Outcome(
            o.label, o.t_ms, expires, len(waiting), o.raw, o.partition, o.offset, o.key
        )
        heapq.heappush(self._outcome_expiry, (expires, o.event_id))
        while len(self._outcomes) > self.policy.max_outcomes:
            self._evict_outcome(out)

    # -- time -----------------------------------------------------------------------
    def _advance(self, watermark: int, out: JoinOutput) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= watermark:
            deadline, rid = heapq.heappop(deadlines)
            entry = self._pending_ids.get(rid)
            if entry is None or entry.deadline_ms != deadline:
                continue  # resolved or evicted earlier
            self._unpend(entry)
            forget = deadline + self.policy.dedup_retention_ms
            self._timed_out[entry.join_key] = forget
            heapq.heappush(self._timed_out_expiry, (forget, entry.join_key))
            label = self.policy.timeout_label
            if label is None:
                out.count(PREDICTIONS, "timeout_dropped")
                self._remember(rid, deadline)
            else:
                self._resolve(entry, label, TIMEOUT, deadline, out)
        expiry = self._outcome_expiry
        while expiry and expiry[0][0] <= watermark:
            expires, eid = heapq.heappop(expiry)
            o = self._outcomes.get(eid)
            if o is None or o.expires_ms != expires:
                continue
            del self._outcomes[eid]
            if not o.matched:
                out.count(OUTCOMES, "unmatched")
        _forget(self._done, self._done_expiry, watermark)
        _forget(self._timed_out, self._timed_out_expiry, watermark)

    # -- resolution -----------------------------------------------------------------
    def _resolve(
        self, entry: _Pending, label: float, resolution: str, labeled_at: int, out: JoinOutput
    ) -> None:
        self._remember(entry.request_id, labeled_at)
        try:
            log = decode(PredictionLog, entry.raw)
        except SchemaError as e:  # validated on the way in; kept for safety, never silent
            out.dead_letters.append(self._letter(entry, REASON_INVALID, str(e)))
            return
        out.examples.append(
            LabeledExample(
                request_id=log.request_id,
                event_id=entry.join_key,
                model_name=log.model_name,
                model_version=log.model_version,
                fingerprint=log.fingerprint,
                entities=log.entities,
                features=log.features,
                score=log.score,
                label=label,
                event_time=log.event_time,
                labeled_at_ms=labeled_at,
                resolution=resolution,
                arm=log.arm,
                feature_status=log.feature_status,
            )
        )

    def _remember(self, request_id: str, at_ms: int) -> None:
        forget = at_ms + self.policy.dedup_retention_ms
        self._done[request_id] = forget
        heapq.heappush(self._done_expiry, (forget, request_id))

    def _unpend(self, entry: _Pending) -> None:
        del self._pending_ids[entry.request_id]
        siblings = self._pending[entry.join_key]
        siblings.remove(entry)
        if not siblings:
            del self._pending[entry.join_key]

    # -- bounds ---------------------------------------------------------------------
    def _evict_prediction(self, out: JoinOutput) -> None:
        while self._deadlines:
            deadline, rid = heapq.heappop(self._deadlines)
            entry = self._pending_ids.get(rid)
            if entry is None or entry.deadline_ms != deadline:
                continue
            self._unpend(entry)
            out.count(PREDICTIONS, "evicted")
            error = (
                f"evicted unresolved: more than {self.policy.max_predictions} predictions "
                "waiting for outcomes in this shard (raise labels.max_pending_predictions)"
            )
            out.dead_letters.append(self._letter(entry, REASON_EVICTED, error))
            return

    def _evict_outcome(self, out: JoinOutput) -> None:
        while self._outcome_expiry:
            expires, eid = heapq.heappop(self._outcome_expiry)
            o = self._outcomes.get(eid)
            if o is None or o.expires_ms != expires:
                continue
            del self._outcomes[eid]
            if o.matched:  # its predictions are labeled: nothing is lost
                return
            out.count(OUTCOMES, "evicted")
            out.dead_letters.append(
                DeadLetter.of(
                    source_topic=self.policy.outcomes_topic,
                    partition=o.partition,
                    offset=o.offset,
                    reason=REASON_EVICTED,
                    error=f"evicted unmatched: more than {self.policy.max_outcomes} outcomes "
                    "waiting for predictions in this shard (raise labels.max_pending_outcomes)",
                    value=o.raw,
                    key=o.key,
                    time_ms=o.t_ms,
                )
            )
            return

    def _letter(self, entry: _Pending, reason: str, error: str) -> DeadLetter:
        return DeadLetter.of(
            source_topic=self.policy.predictions_topic,
            partition=entry.partition,
            offset=entry.offset,
            reason=reason,
            error=error,
            value=entry.raw,
            key=entry.key,
            time_ms=entry.t_ms,
        )

    # -- recovery -------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole shard as bytes (immutable, as the engine requires)."""
        state: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "watermark_ms": self.watermark_ms,
            "pending": list(self._pending_ids.values()),
            "outcomes": self._outcomes,
            "done": self._done,
            "timed_out": self._timed_out,
        }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _restore(self, blob: bytes) -> None:
        state = pickle.loads(blob)
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
            raise SchemaError(
                "labels join state has an unknown format: start with a fresh recovery directory"
            )
        self.watermark_ms = state["watermark_ms"]
        for entry in state["pending"]:
            self._pending.setdefault(entry.join_key, []).append(entry)
            self._pending_ids[entry.request_id] = entry
            self._deadlines.append((entry.deadline_ms, entry.request_id))
        heapq.heapify(self._deadlines)
        self._outcomes = dict(state["outcomes"])
        self._outcome_expiry = [(o.expires_ms, eid) for eid, o in self._outcomes.items()]
        heapq.heapify(self._outcome_expiry)
        self._done = dict(state["done"])
        self._done_expiry = [(t, rid) for rid, t in self._done.items()]
        heapq.heapify(self._done_expiry)
        self._timed_out = dict(state["timed_out"])
        self._timed_out_expiry = [(t, k) for k, t in self._timed_out.items()]
        heapq.heapify(self._timed_out_expiry)


def _forget(table: dict[str, int], expiry: list[tuple[int, str]], watermark: int) -> None:
    while expiry and expiry[0][0] <= watermark:
        at, key = heapq.heappop(expiry)
        if table.get(key) == at:
            del table[key]
