"""The label join (streams/labels/join.py): both arrival orders, the maturity window,
duplicates, expiry, bounds, and state that survives pickling."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import pytest
from labels_support import prediction_in

from loopline.contracts.schemas import DeadLetter, LabeledExample, Outcome, PredictionLog, encode
from loopline.streams.labels.inputs import (
    OutcomeIn,
    PredictionIn,
    SourceRecord,
    Tick,
    decode_outcome,
)
from loopline.streams.labels.join import JoinInput, JoinPolicy, JoinShard

MIN = 60_000
T0 = 1_700_000_000_000


def log(rid: str, eid: str, t: int, arm: str = "champion") -> PredictionLog:
    return PredictionLog(
        request_id=rid,
        model_name="fraud",
        model_version="7",
        feature_set="fraud",
        fingerprint="f" * 64,
        entities={"card": f"c-{rid}", "merchant": "m1"},
        features=[0.25, 1.0 / 3.0, 1e300],
        score=0.125,
        event_time=t,
        served_at_ms=t + 3,
        event_id=eid,
        arm=arm,
        feature_status={"merchant_count_1h": "missing"},
    )


def pred(rid: str, eid: str, t: int, offset: int = 0, arm: str = "champion") -> PredictionIn:
    return prediction_in(log(rid, eid, t, arm), offset=offset)


def outcome(eid: str, label: int, t: int, offset: int = 0) -> OutcomeIn:
    item = decode_outcome(
        SourceRecord("outs", 2, offset, eid.encode(), encode(Outcome(eid, label, t)))
    )
    assert isinstance(item, OutcomeIn)
    return item


def shard(**policy: object) -> JoinShard:
    defaults: dict[str, object] = {"maturity_ms": 10 * MIN, "outcome_retention_ms": 30 * MIN}
    defaults.update(policy)
    return JoinShard(JoinPolicy(**defaults))  # type: ignore[arg-type]


def resolved(examples: list[LabeledExample]) -> dict[str, tuple[int, str, int]]:
    return {e.request_id: (e.label, e.resolution, e.labeled_at_ms) for e in examples}


def test_outcome_after_the_prediction_labels_it_with_every_field_carried() -> None:
    s = shard()
    assert s.process([pred("r1", "e1", T0)]).examples == []
    assert s.pending_predictions == 1
    (ex,) = s.process([outcome("e1", 1, T0 + 2 * MIN)]).examples
    src = log("r1", "e1", T0)
    assert ex == LabeledExample(
        request_id="r1",
        event_id="e1",
        model_name="fraud",
        model_version="7",
        fingerprint=src.fingerprint,
        entities=src.entities,
        features=src.features,  # exact floats: the raw log is decoded again
        score=0.125,
        label=1,
        event_time=T0,
        labeled_at_ms=T0 + 2 * MIN,
        resolution="outcome",
        arm="champion",
        feature_status={"merchant_count_1h": "missing"},
    )
    assert s.pending_predictions == 0


def test_outcome_before_the_prediction_waits_for_it() -> None:
    s = shard()
    assert s.process([outcome("e1", 1, T0 + MIN)]).examples == []
    assert s.pending_outcomes == 1
    out = s.process([pred("r1", "e1", T0)])
    assert resolved(out.examples) == {"r1": (1, "outcome", T0 + MIN)}
    # A prediction logged after its outcome is labeled at its own (later) time.
    out = s.process([outcome("e2", 0, T0), pred("r2", "e2", T0 + 5_000)])
    assert resolved(out.examples) == {"r2": (0, "outcome", T0 + 5_000)}


def test_no_outcome_within_the_window_is_resolved_by_the_timeout_policy() -> None:
    s = shard()
    s.process([pred("r1", "e1", T0), pred("r2", "e2", T0 + MIN)])
    assert s.process([Tick(T0 + 10 * MIN - 1)]).examples == []  # not yet mature
    out = s.process([Tick(T0 + 10 * MIN)])
    assert resolved(out.examples) == {"r1": (0, "timeout", T0 + 10 * MIN)}
    out = s.process([Tick(T0 + 60 * MIN)])
    assert resolved(out.examples) == {"r2": (0, "timeout", T0 + 11 * MIN)}
    assert s.pending_predictions == 0


@pytest.mark.parametrize(("label", "expected"), [(1, [(1, "timeout")]), (None, [])])
def test_other_timeout_policies(label: int | None, expected: list[tuple[int, str]]) -> None:
    s = shard(timeout_label=label)
    out = s.process([pred("r1", "e1", T0), Tick(T0 + 10 * MIN)])
    assert [(e.label, e.resolution) for e in out.examples] == expected
    if label is None:
        assert out.counts[("predictions", "timeout_dropped")] == 1
        # Dropped, yet remembered: the same log again is a duplicate, not a new prediction.
        assert s.process([pred("r1", "e1", T0)]).counts == {("predictions", "duplicate"): 1}


def test_the_tick_order_within_a_batch_is_respected() -> None:
    s = shard()
    s.process([pred("r1", "e1", T0)])
    # The watermark passes r1's window before its outcome is read: the outcome is late.
    out = s.process([Tick(T0 + 10 * MIN), outcome("e1", 1, T0 + 9 * MIN)])
    assert resolved(out.examples) == {"r1": (0, "timeout", T0 + 10 * MIN)}
    assert out.counts[("outcomes", "late")] == 1


def test_a_prediction_arriving_after_its_window_is_resolved_at_once() -> None:
    s = shard()
    s.process([Tick(T0 + 30 * MIN)])
    out = s.process([pred("r1", "e1", T0)])
    assert resolved(out.examples) == {"r1": (0, "timeout", T0 + 10 * MIN)}


def test_duplicate_predictions_and_outcomes_are_ignored_and_counted() -> None:
    s = shard()
    out = s.process(
        [
            pred("r1", "e1", T0),
            pred("r1", "e1", T0),  # pending duplicate
            outcome("e1", 1, T0 + MIN),
            outcome("e1", 0, T0 + 2 * MIN),  # the first label wins
            pred("r1", "e1", T0),  # resolved duplicate
        ]
    )
    assert resolved(out.examples) == {"r1": (1, "outcome", T0 + MIN)}
    assert out.counts == {
        ("predictions", "accepted"): 1,
        ("predictions", "duplicate"): 2,
        ("outcomes", "accepted"): 1,
        ("outcomes", "duplicate"): 1,
    }


def test_every_prediction_of_an_event_gets_its_outcome_shadow_arms_included() -> None:
    s = shard()
    out = s.process(
        [
            pred("r1", "e1", T0),
            pred("r1-shadow", "e1", T0, arm="challenger"),
            outcome("e1", 1, T0 + MIN),
            pred("r1-late-log", "e1", T0, arm="shadow"),  # logged after the outcome
        ]
    )
    assert {e.request_id: (e.label, e.arm) for e in out.examples} == {
        "r1": (1, "champion"),
        "r1-shadow": (1, "challenger"),
        "r1-late-log": (1, "shadow"),
    }


def test_a_log_without_event_id_joins_on_its_request_id() -> None:
    s = shard()
    out = s.process([pred("r1", "", T0), outcome("r1", 1, T0 + MIN)])
    ((rid, eid, label),) = [(e.request_id, e.event_id, e.label) for e in out.examples]
    assert (rid, eid, label) == ("r1", "r1", 1)


def test_unmatched_outcomes_expire_counted_matched_ones_silently() -> None:
    s = shard(outcome_retention_ms=5 * MIN)
    s.process([outcome("e-orphan", 1, T0), outcome("e1", 1, T0), pred("r1", "e1", T0)])
    assert s.pending_outcomes == 2
    out = s.process([Tick(T0 + 5 * MIN)])
    assert out.counts == {("outcomes", "unmatched"): 1}
    assert s.pending_outcomes == 0 and out.dead_letters == []


def test_duplicates_are_remembered_for_the_dedup_retention_only() -> None:
    s = shard(dedup_retention_ms=MIN)
    s.process([pred("r1", "e1", T0), outcome("e1", 1, T0)])
    assert s.process([pred("r1", "e1", T0)]).counts == {("predictions", "duplicate"): 1}
    s.process([Tick(T0 + 31 * MIN)])  # outcome expired (30 min), r1 forgotten (1 min)
    out = s.process([pred("r1", "e1", T0 + 31 * MIN)])
    assert out.counts == {("predictions", "accepted"): 1}


def test_bounds_evict_the_entry_due_soonest_to_dead_letters_with_its_bytes() -> None:
    s = shard(max_predictions=2, max_outcomes=2, predictions_topic="P", outcomes_topic="O")
    first = [pred("r2", "e2", T0 + 2, offset=12), pred("r1", "e1", T0 + 1, offset=11)]
    out = s.process([*first, pred("r3", "e3", T0 + 3, offset=13)])
    (letter,) = out.dead_letters
    assert (letter.source_topic, letter.partition, letter.offset, letter.reason) == (
        "P",
        1,
        11,
        "evicted",
    )
    assert letter.original_value() == encode(log("r1", "e1", T0 + 1))
    assert s.pending_predictions == 2
    # Outcomes: a matched one is dropped silently, an unmatched one is dead-lettered.
    s.process([outcome("e2", 1, T0, offset=5)])  # matches r2
    out = s.process([outcome("x1", 1, T0 + 1, offset=6), outcome("x2", 1, T0 + 2, offset=7)])
    assert out.dead_letters == []  # e2 (matched, soonest to expire) made room
    out = s.process([outcome("x3", 1, T0 + 3, offset=8)])
    (letter,) = out.dead_letters
    assert (letter.source_topic, letter.offset, letter.reason) == ("O", 6, "evicted")
    assert out.counts[("outcomes", "evicted")] == 1


def test_snapshot_is_immutable_bytes_that_restore_the_same_behaviour() -> None:
    s = shard()
    s.process([pred("r1", "e1", T0), outcome("e9", 1, T0), pred("r2", "e2", T0 + MIN)])
    blob = s.snapshot()
    assert isinstance(blob, bytes)
    pickle.loads(pickle.dumps(blob))  # what the engine does with it
    s.process([outcome("e1", 1, T0 + MIN)])  # changes after the snapshot do not leak into it
    restored = JoinShard(s.policy, blob)
    assert restored.pending_predictions == 2 and restored.pending_outcomes == 1
    out = restored.process([outcome("e1", 1, T0 + MIN), Tick(T0 + 11 * MIN), pred("r9", "e9", T0)])
    assert resolved(out.examples) == {
        "r1": (1, "outcome", T0 + MIN),
        "r2": (0, "timeout", T0 + 11 * MIN),
        "r9": (1, "outcome", T0),
    }


def test_unknown_snapshot_format_is_refused() -> None:
    with pytest.raises(Exception, match="fresh recovery directory"):
        JoinShard(JoinPolicy(maturity_ms=1), pickle.dumps({"format": 99}))


def _random_stream(seed: int, n: int) -> list[JoinInput]:
    """Predictions, outcomes (some before their prediction, some never, some twice),
    duplicates and ticks, in a plausible arrival order."""
    rng = random.Random(seed)
    items: list[tuple[float, JoinInput]] = []
    for i in range(n):
        t = T0 + i * 1_000
        items.append((t + rng.uniform(0, 20_000), pred(f"r{i}", f"e{i % (n - 7)}", t)))
        if rng.random() < 0.1:
            items.append((t + rng.uniform(0, 60_000), pred(f"r{i}", f"e{i % (n - 7)}", t)))
        if rng.random() < 0.4:
            delay = rng.choice([-30_000, 5_000, 4 * MIN, 9 * MIN, 15 * MIN])
            items.append((t + delay, outcome(f"e{i % (n - 7)}", rng.randint(0, 1), t + delay)))
        if rng.random() < 0.05:
            items.append((t, outcome(f"orphan{i}", 1, t)))
    items.sort(key=lambda x: x[0])
    out: list[JoinInput] = []
    for arrival, item in items:
        out.append(item)
        if rng.random() < 0.05:
            out.append(Tick(int(arrival) - MIN))
    out.append(Tick(T0 + n * 1_000 + 60 * MIN))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restoring_at_any_point_equals_one_uninterrupted_run(seed: int) -> None:
    stream = _random_stream(seed, 600)
    policy = JoinPolicy(maturity_ms=10 * MIN, outcome_retention_ms=20 * MIN)
    whole = JoinShard(policy)
    reference = [whole.process([x]) for x in stream]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), 8))
    current = JoinShard(policy)
    pieces = []
    last = 0
    for cut in [*cuts, len(stream)]:
        pieces += [current.process([x]) for x in stream[last:cut]]
        current = JoinShard(policy, pickle.loads(pickle.dumps(current.snapshot())))
        last = cut
    assert [p.examples for p in pieces] == [r.examples for r in reference]
    assert sum((Counter(p.counts) for p in pieces), Counter()) == sum(
        (Counter(r.counts) for r in reference), Counter()
    )
    examples = [e for r in reference for e in r.examples]
    ids = [e.request_id for e in examples]
    assert len(ids) == len(set(ids)) == 600  # each prediction once, none lost
    assert {e.resolution for e in examples} == {"outcome", "timeout"}


def test_bad_items_are_a_programming_error_not_data() -> None:
    # Only PredictionIn, OutcomeIn and Tick are join inputs (the types say so); anything
    # else fails loudly instead of being taken for a tick.
    with pytest.raises(AttributeError):
        shard().process(
            [
                DeadLetter.of(
                    source_topic="x", partition=0, offset=0, reason="r", error="e", value=b""
                )
            ]
        )  # type: ignore[list-item]
