"""Kafka broker kill -9 and restart in the middle of the stream.

Events flow from an idempotent ``acks=all`` producer through a private
broker to the features flow and Redis; serving answers Predict calls and logs
each prediction to the same broker. A third of the way in the broker gets
SIGKILL and is started again on its data. Checked: every acknowledged event
is on the topic (none lost, none twice), the features flow resumes on its
own, Redis ends equal to the offline replay of the acked events (a clean
run), and Predict keeps answering within its deadline while the prediction
log buffers (or sheds, counted) instead of blocking the call.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from loopline.featurerepo.loader import builtin_example, load_project
from support.chaos_readback import latency_summary, longest_outage_s, topic_event_ids
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_services import (
    RECORDS,
    features_caught_up,
    loop_result,
    metric_total,
    server_calls_over,
    start_loop,
    wait_metric_rises,
)
from support.chaos_stack import PrivateStack

NAME = "kafka_kill"
SUMMARY = (
    "Kafka broker kill -9 + restart mid-stream: acked events kept, features exact, Predict answers"
)
DOWN_S = 3.0  # how long the broker stays dead before the restart begins
PREDICT_DEADLINE_S = 0.5
PREDICTION_LOG = "loopline_serving_prediction_log_total"


def run(options: ChaosOptions) -> ScenarioResult:
    work = Path(tempfile.mkdtemp(prefix="chaos-kafka-kill-"))
    fs = load_project(builtin_example()).feature_set()
    with PrivateStack(work) as stack:
        loop = start_loop(stack, options, PREDICT_DEADLINE_S)
        flow, flow_port, serve, metrics_port = (
            loop.flow,
            loop.flow_port,
            loop.serve,
            loop.metrics_port,
        )
        events, predict, topics = loop.events, loop.predict, stack.topics
        try:
            time.sleep(options.seconds / 3)
            killed_at = time.monotonic()
            stack.kill("kafka")
            time.sleep(DOWN_S)
            read_before = metric_total(flow_port, RECORDS) or 0.0
            restart_s = stack.restart("kafka")
            resumed_s = wait_metric_rises(flow_port, RECORDS, read_before, 180)
            recovery_s = None if resumed_s is None else time.monotonic() - killed_at
            time.sleep(
                max(0.0, options.seconds - (time.monotonic() - killed_at) - options.seconds / 3)
            )
        finally:
            calls = predict.stop()
            unacked = events.stop()
        acked = events.acked_events()
        features, caught_up_s = features_caught_up(stack, fs, acked, 180)
        on_topic = topic_event_ids(stack.bootstrap, topics.events)
        lost = sum(1 for e in acked if on_topic[e["event_id"]] == 0)
        twice = sum(1 for n in on_topic.values() if n > 1)
        # Let serving deliver (or give up on) what it queued during the outage.
        time.sleep(3)
        log = {
            r: metric_total(metrics_port, PREDICTION_LOG, result=r)
            for r in ("delivered", "failed", "dropped")
        }
        over, served = server_calls_over(metrics_port, PREDICT_DEADLINE_S)
        flow_alive, serve_alive = flow.alive(), serve.alive()
        flow.stop()
        serve.stop()
    latency = latency_summary(calls.latencies_s)
    checks = {
        "no_acked_event_lost": lost == 0,
        "no_event_twice": twice == 0,
        "flow_resumed": resumed_s is not None and flow_alive,
        "features_equal_clean_run": caught_up_s is not None,
        "serving_alive": serve_alive,
        # Judged in the server: the clients share 2 cores with a restarting JVM, and
        # a starved client misses deadlines the server met (client failures: details).
        "predict_within_deadline": over == 0 and set(calls.codes) <= {"DEADLINE_EXCEEDED"},
    }
    return loop_result(
        NAME,
        events,
        calls,
        lost=lost,
        recovery_s=recovery_s,
        checks=checks,
        details={
            "broker_restart_s": round(restart_s, 1),
            "flow_resumed_after_restart_s": None if resumed_s is None else round(resumed_s, 1),
            "features_caught_up_s": caught_up_s,
            "features": features,
            "events_unacked": unacked,
            "events_failed": events.counts.failed,
            "producer_errors": dict(events.counts.errors),
            "events_on_topic_twice": twice,
            "outcomes_acked": events.counts.outcomes_acked,
            "predict_latency": latency,
            "server_calls_over_deadline": over,
            "server_calls": served,
            "predict_codes": dict(calls.codes),
            "predict_longest_outage_s": longest_outage_s(calls.timeline),
            "prediction_log": log,
            "work": str(work),
        },
    )
