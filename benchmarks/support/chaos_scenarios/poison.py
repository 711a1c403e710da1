"""Poison pills at a tenth of the traffic: random bytes, wrong types, huge payloads.

The event stream mixes bad messages into good transactions on the events
topic of a private stack: random bytes, JSON with a wrong type or a missing
field, nesting past the parser's depth limit, and payloads of 0.1-0.9 MB
(over the source's ``max_bytes``). Checked: every bad message reaches the
dead-letter topic with a reason and its original bytes, nothing else is
dead-lettered, the flow keeps running, and Redis ends equal to the offline
replay of the good events alone (a clean run).
"""

from __future__ import annotations

import base64
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import DeadLetter, decode
from loopline.featurerepo.loader import builtin_example, load_project
from support.chaos_load import EventStream, fraud_event
from support.chaos_readback import topic_messages, topic_size
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_services import features_caught_up, features_flow, wait_metric_rises
from support.chaos_stack import PrivateStack, wait_for

NAME = "poison"
SUMMARY = "10 % poison pills (random bytes, wrong types, huge): all dead-lettered, features exact"
SHARE = 0.10
RECORDS = "loopline_features_records_total"


def poison_pill(rng: random.Random) -> tuple[bytes, bytes]:
    """One bad message (key, value), of a random kind."""
    good = fraud_event(rng, rng.randrange(10**9), int(time.time() * 1000), "poison")
    kind = rng.randrange(6)
    if kind == 0:
        value = rng.randbytes(rng.randrange(1, 600))
    elif kind == 1:
        value = json.dumps({**good, "amount": str(good["amount"])}).encode()
    elif kind == 2:
        value = json.dumps({**good, "event_time": "yesterday", "card_id": 42}).encode()
    elif kind == 3:
        value = json.dumps({k: v for k, v in good.items() if k != "merchant_id"}).encode()
    elif kind == 4:
        value = ("[" * 40 + "]" * 40).encode()
    else:
        pad = "x" * rng.randrange(100_000, 900_000)
        value = json.dumps({**good, "note": pad}).encode()
    return good["card_id"].encode(), value


def run(options: ChaosOptions) -> ScenarioResult:
    work = Path(tempfile.mkdtemp(prefix="chaos-poison-"))
    fs = load_project(builtin_example()).feature_set()
    with PrivateStack(work) as stack:
        flow, flow_port = features_flow(stack)
        events = EventStream(
            stack.settings.kafka,
            stack.topics.events,
            rate=options.events_per_s,
            seed=options.seed,
            poison=poison_pill,
            poison_share=SHARE,
        ).start()
        try:
            if wait_metric_rises(flow_port, RECORDS, 0.0, 300) is None:
                raise SystemExit(f"the features flow never read an event:\n{flow.tail()}")
            time.sleep(options.seconds)
        finally:
            events.stop()
        started = time.monotonic()
        features, caught_up_s = features_caught_up(stack, fs, events.acked_events(), 180)
        # The flow sends dead letters beside its Redis writes: wait for them too.
        wait_for(
            lambda: (
                topic_size(stack.bootstrap, stack.topics.dead_letters) >= events.counts.poison_acked
            ),
            120,
            1.0,
        )
        letters = topic_messages(stack.bootstrap, stack.topics.dead_letters)
        flow_alive = flow.alive()
        flow.stop()
    reasons: Counter[str] = Counter()
    whole = good_dead = 0
    for value in letters:
        try:
            letter = decode(DeadLetter, value)
        except SchemaError:
            reasons["(undecodable dead letter)"] += 1
            continue
        reasons[letter.reason] += 1
        raw = base64.b64decode(letter.value_b64)
        whole += bool(letter.error) and len(raw) > 0
        good_dead += raw.startswith(b'{"event_id": "ev-')
    c = events.counts
    checks = {
        "every_poison_dead_lettered": len(letters) == c.poison_acked,
        "each_with_reason_and_bytes": whole == len(letters),
        "no_good_event_dead_lettered": good_dead == 0,
        "features_equal_clean_run": caught_up_s is not None,
        "flow_alive": flow_alive,
    }
    return ScenarioResult(
        scenario=NAME,
        events_sent=c.sent,
        events_acked=c.acked,
        events_lost=0 if caught_up_s is not None else features["missing"],
        recovery_s=round(time.monotonic() - started, 1) if caught_up_s is not None else None,
        invariant_ok=all(checks.values()),
        details={
            "checks": checks,
            "poison_sent": c.poison_sent,
            "poison_acked": c.poison_acked,
            "dead_letters": len(letters),
            "good_events_dead_lettered": good_dead,
            "reasons": dict(reasons),
            "features": features,
            "producer_errors": dict(c.errors),
            "work": str(work),
        },
    )
