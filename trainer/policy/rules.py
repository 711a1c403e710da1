"""When to retrain: drift events in, retrain events out (pure logic, no Kafka).

A drift event *triggers* when its kind is one of ``trigger_kinds`` and its
severity reaches ``min_severity``, or when ``warning_quorum`` warnings on
distinct (kind, feature) pairs arrive within ``quorum_window_s``. A trigger
then waits (is *pending*) until every gate is open:

- ``min_new_rows`` labeled rows arrived since the trigger (the new regime must
  be in the training data), counted by the ``new_rows(since_ms)`` port; a
  later event that could trigger on its own, on a (kind, feature) not yet
  among the causes, restarts the count (the first may have been a false alarm);
- ``min_interval_s`` passed since the last retrain;
- fewer than ``max_per_day`` retrains in the last 24 hours.

A pending trigger collects later drift events and is dropped after
``pending_timeout_s``. A schedule (``schedule_s``) requests a retrain per
period when rows arrived since the last retrain, under the same interval and
cap. Ids are idempotency keys derived from their causes (the drift event ids,
or the schedule slot, as ``trainer.service`` names scheduled events), and
:meth:`RetrainPolicy.restore` replays the retrain topic's history so a
restarted policy knows what was already requested.

>>> from loopline.contracts.schemas import DriftEvent
>>> from loopline.contracts.settings import PolicySettings
>>> rows = {"n": 0}
>>> policy = RetrainPolicy(
...     PolicySettings(min_new_rows=500, schedule_s=0), "fraud", lambda since_ms: rows["n"]
... )
>>> drift = DriftEvent(
...     id="de-1", time_ms=1_000, kind="concept", detector="adwin(binary)", feature="error",
...     statistic_before=0.1, statistic_after=0.3, window_before=4000, window_after=150,
...     model_version="3", severity="critical")
>>> policy.on_drift(drift, now_ms=10_000).action
'pending'
>>> rows["n"] = 800
>>> [(d.action, d.event.id, d.event.trigger) for d in policy.tick(now_ms=20_000)]
[('triggered', 'drift-fraud-cc6c7a2430aa98ff', 'drift')]
>>> policy.on_drift(drift, now_ms=30_000).action  # the same alarm again (a replay)
'duplicate'
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from loopline.contracts.errors import ConfigError
from loopline.contracts.schemas import DriftEvent, RetrainEvent
from loopline.contracts.settings import PolicySettings

SEVERITIES = ("info", "warning", "critical")
DAY_MS = 24 * 3600 * 1000
# Drift ids remembered for duplicate detection (a bounded memory).
MAX_REMEMBERED = 50_000

NewRows = Callable[[int], int]


@dataclass(frozen=True)
class Decision:
    """What the policy did with an input: ``action`` and, when it emits, the event.

    Actions: ``triggered`` (``event`` is set), ``pending`` (held: ``reason`` is
    ``rows``, ``interval`` or ``daily_cap``), ``expired``, ``below`` (severity
    too low), ``ignored`` (kind not configured), ``duplicate``.
    """

    action: str
    event: RetrainEvent | None = None
    reason: str = ""


@dataclass
class _Pending:
    since_ms: int
    drift: list[DriftEvent] = field(default_factory=list)
    held: str = ""  # why it waits now ("" before the first check)

    def signals(self, event: DriftEvent) -> bool:
        """Is ``event``'s (kind, feature) already among this trigger's causes?"""
        return any((e.kind, e.feature) == (event.kind, event.feature) for e in self.drift)


class RetrainPolicy:
    """Decides retraining from drift events and the clock.

    Parameters
    ----------
    settings
        ``Settings.policy``.
    model_name
        The model retrained (part of every id; events are keyed by it).
    new_rows
        ``new_rows(since_ms)``: labeled rows that arrived since ``since_ms``.
    """

    def __init__(self, settings: PolicySettings, model_name: str, new_rows: NewRows) -> None:
        if settings.min_severity not in SEVERITIES:
            raise ConfigError(
                f"policy.min_severity must be one of {SEVERITIES}, not {settings.min_severity!r}"
            )
        kinds = {k.strip() for k in settings.trigger_kinds.split(",") if k.strip()}
        unknown = kinds - {"data", "prediction", "concept", "performance"}
        if unknown:
            raise ConfigError(f"policy.trigger_kinds: unknown kinds {sorted(unknown)}")
        if settings.max_per_day < 1 or settings.warning_quorum < 1:
            raise ConfigError("policy.max_per_day and policy.warning_quorum must be >= 1")
        self.settings = settings
        self.model_name = model_name
        self.new_rows = new_rows
        self.kinds = frozenset(kinds)
        self.last_retrain_ms = 0
        self.pending: _Pending | None = None
        self._recent: deque[int] = deque()  # emission times in the last 24 h
        self._seen: OrderedDict[str, None] = OrderedDict()  # drift ids handled
        self._emitted: OrderedDict[str, None] = OrderedDict()  # retrain ids known
        self._warnings: list[tuple[int, DriftEvent]] = []  # (received, event)
        self._schedule_slot = -1

    # -- inputs -----------------------------------------------------------------------
    def on_drift(self, event: DriftEvent, now_ms: int) -> Decision:
        """Take one drift event received at ``now_ms``."""
        if event.id in self._seen:
            return Decision("duplicate")
        self._remember(self._seen, event.id)
        if event.kind not in self.kinds:
            return Decision("ignored", reason=f"kind {event.kind} does not trigger")
        rank = _rank(event.severity)
        pending = self.pending
        if pending is not None and rank >= _rank("warning"):
            if rank >= _rank(self.settings.min_severity) and not pending.signals(event):
                # A new signal strong enough to trigger marks a new regime (an
                # earlier trigger may have been a false alarm): its rows must
                # be in the training data, so they are counted from now. Each
                # (kind, feature) restarts the count once at most.
                pending.since_ms = now_ms
            pending.drift.append(event)  # one retrain answers all of them
            return self._try_emit(now_ms)
        if rank >= _rank(self.settings.min_severity):
            self.pending = _Pending(since_ms=now_ms, drift=[event])
            return self._try_emit(now_ms)
        if event.severity != "warning":
            return Decision("below", reason=f"severity {event.severity}")
        window_ms = self.settings.quorum_window_s * 1000
        self._warnings = [(t, e) for t, e in self._warnings if now_ms - t <= window_ms]
        self._warnings.append((now_ms, event))
        distinct = {(e.kind, e.feature): e for _, e in self._warnings}
        if len(distinct) < self.settings.warning_quorum:
            return Decision("below", reason=f"{len(distinct)} warning(s) in the quorum window")
        self._warnings = []
        self.pending = _Pending(since_ms=now_ms, drift=list(distinct.values()))
        return self._try_emit(now_ms)

    def tick(self, now_ms: int) -> list[Decision]:
        """Re-check a pending trigger and the schedule; call every few seconds."""
        out: list[Decision] = []
        pending = self.pending
        if pending is not None:
            if now_ms - pending.since_ms > self.settings.pending_timeout_s * 1000:
                self.pending = None
                out.append(Decision("expired", reason=pending.held or "timeout"))
            else:
                held = pending.held
                decision = self._try_emit(now_ms)
                if decision.action == "triggered" or decision.reason != held:
                    out.append(decision)
        scheduled = self._schedule(now_ms)
        if scheduled is not None:
            out.append(scheduled)
        return out

    def restore(self, history: Iterable[RetrainEvent]) -> int:
        """Learn past retrain requests (the retrain topic, oldest first); returns how many."""
        n = 0
        for event in history:
            n += 1
            self._record(event)
        return n

    # -- internals --------------------------------------------------------------------
    def _try_emit(self, now_ms: int) -> Decision:
        pending = self.pending
        assert pending is not None
        held = self._held(now_ms, since_ms=pending.since_ms)
        if held:
            pending.held = held
            return Decision("pending", reason=held)
        self.pending = None
        ids = sorted({e.id for e in pending.drift})
        event = RetrainEvent(
            id=f"drift-{self.model_name}-{_digest(ids)}",
            time_ms=now_ms,
            trigger="drift",
            reason=_describe(pending.drift),
            drift_event_ids=ids,
        )
        if event.id in self._emitted:  # requested before (restored history)
            return Decision("duplicate", reason="retrain already requested")
        self._record(event)
        return Decision("triggered", event=event)

    def _schedule(self, now_ms: int) -> Decision | None:
        every_ms = self.settings.schedule_s * 1000
        if every_ms <= 0:
            return None
        slot = int(now_ms // every_ms)
        if slot == self._schedule_slot:
            return None
        slot_ms = int(slot * every_ms)
        event_id = f"schedule-{self.model_name}-{slot_ms}"
        if event_id in self._emitted:
            self._schedule_slot = slot
            return None
        # Rows since the last retrain: a schedule retrains on whatever is new.
        held = self._held(now_ms, since_ms=self.last_retrain_ms)
        if held:
            return None  # retried on the next tick, while the slot lasts
        self._schedule_slot = slot
        event = RetrainEvent(
            id=event_id,
            time_ms=now_ms,
            trigger="schedule",
            reason=f"scheduled every {self.settings.schedule_s:g} s",
        )
        self._record(event)
        return Decision("triggered", event=event)

    def _held(self, now_ms: int, since_ms: int) -> str:
        s = self.settings
        if self.last_retrain_ms and now_ms - self.last_retrain_ms < s.min_interval_s * 1000:
            return "interval"
        while self._recent and now_ms - self._recent[0] >= DAY_MS:
            self._recent.popleft()
        if len(self._recent) >= s.max_per_day:
            return "daily_cap"
        if self.new_rows(since_ms) < s.min_new_rows:
            return "rows"
        return ""

    def _record(self, event: RetrainEvent) -> None:
        self._remember(self._emitted, event.id)
        for drift_id in event.drift_event_ids:
            self._remember(self._seen, drift_id)
        self.last_retrain_ms = max(self.last_retrain_ms, event.time_ms)
        self._recent.append(event.time_ms)
        if len(self._recent) > 1 and self._recent[-2] > event.time_ms:  # out of order
            self._recent = deque(sorted(self._recent))

    @staticmethod
    def _remember(memory: OrderedDict[str, None], key: str) -> None:
        memory[key] = None
        memory.move_to_end(key)
        while len(memory) > MAX_REMEMBERED:
            memory.popitem(last=False)


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _describe(events: list[DriftEvent]) -> str:
    """One line for people: the most severe cause first.

    >>> e = DriftEvent("a", 1, "concept", "adwin", "error", 0.1, 0.31, 100, 10, "3", "critical")
    >>> _describe([e, e])
    'concept drift on error (critical, 0.1 -> 0.31, model 3) and 1 more'
    """
    ordered = sorted(events, key=lambda e: -_rank(e.severity))
    top = ordered[0]
    text = (
        f"{top.kind} drift on {top.feature} ({top.severity}, {top.statistic_before:.3g} -> "
        f"{top.statistic_after:.3g}, model {top.model_version})"
    )
    if len(ordered) > 1:
        text += f" and {len(ordered) - 1} more"
    return text
