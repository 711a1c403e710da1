"""Serving kill -9 under load: one replica of two, then the whole server.

Serving runs ``--replicas 2`` on a private stack whose Redis holds fixed
feature values (the offline replay of a burst of events), and every request
carries its event time, so each request has exactly one right answer: the
score it got before any fault. Clients retry UNAVAILABLE and
DEADLINE_EXCEEDED (as the README asks around restarts). A third of the way
in, one worker process gets SIGKILL (its supervisor starts another); at two
thirds the whole server (supervisor and workers) gets SIGKILL and is started
again at once, as an orchestrator would. Checked: no wrong answer, no failed
call after the retries, every record on the predictions topic is whole (no
torn record), and how many answered calls the killed processes never logged
(the prediction log is asynchronous: what a killed process had queued is gone).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import grpc

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import PredictionLog, decode
from loopline.featurerepo.loader import builtin_example, load_project
from loopline.v1 import inference_pb2 as pb
from support.chaos_load import PredictLoop
from support.chaos_readback import latency_summary, longest_outage_s, topic_messages
from support.chaos_scenarios import ChaosOptions, ScenarioResult
from support.chaos_services import fixed_serving
from support.chaos_stack import PrivateStack, wait_for, wait_port

NAME = "serving_kill"
SUMMARY = "serving kill -9 (one of 2 replicas, then all) under load: no wrong answer, no torn log"
POOL = 400
RETRIES = 6


def _workers(pid: int) -> list[int]:
    """The serving worker processes of supervisor ``pid`` (not multiprocessing's helpers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    out = []
    for child in map(int, text.split()):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in argv:
            out.append(child)
    return out


def run(options: ChaosOptions) -> ScenarioResult:
    work = Path(tempfile.mkdtemp(prefix="chaos-serving-kill-"))
    fs = load_project(builtin_example()).feature_set()
    with PrivateStack(work) as stack:
        serve, port, _metrics, pool = fixed_serving(stack, fs, options, replicas=2, pool=POOL)
        target = f"127.0.0.1:{port}"
        reference = _reference(target, pool)
        answered: list[str] = []

        def check(request: pb.PredictRequest, response: pb.PredictResponse) -> bool:
            answered.append(response.request_id)
            if any(f.status == pb.FEATURE_STATUS_DEFAULTED for f in response.features):
                return True  # Redis was too slow: a degraded answer, flagged as such
            return response.score == reference[request.SerializeToString()]

        predict = PredictLoop(
            target,
            threads=4,
            rate=200,
            deadline_s=1.0,
            retries=RETRIES,
            retry_codes=(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED),
            check=check,
            requests=lambda r: pool[r.randrange(POOL)],
        ).start()
        try:
            time.sleep(options.seconds / 3)
            workers = _workers(serve.pid)
            if not workers:
                raise SystemExit(f"serving runs no worker process:\n{serve.tail()}")
            os.kill(workers[0], signal.SIGKILL)
            replaced = wait_for(lambda: len(set(_workers(serve.pid)) - set(workers)) >= 1, 60, 0.05)
            time.sleep(options.seconds / 3)
            killed_all_at = time.monotonic()
            serve.kill9()
            serve.start()
            back = wait_port(port, 120)
            answering = wait_for(lambda: _answers(target, pool[0]), 120, 0.05)
            whole_restart_s = None if answering is None else time.monotonic() - killed_all_at
            time.sleep(options.seconds / 3)
        finally:
            calls = predict.stop()
        serve.stop()
        messages = topic_messages(stack.bootstrap, stack.topics.predictions)
    torn, logged = 0, set()
    for value in messages:
        try:
            logged.add(decode(PredictionLog, value).request_id)
        except SchemaError:  # a record cut short, or otherwise broken
            torn += 1
    unlogged = sum(1 for rid in answered if rid not in logged)
    checks = {
        "no_wrong_answer": calls.wrong == 0,
        "no_failed_call_after_retries": calls.failed == 0,
        "no_torn_log_record": torn == 0,
        "worker_replaced": replaced is not None,
        "server_back_after_restart": whole_restart_s is not None,
    }
    return ScenarioResult(
        scenario=NAME,
        predict_calls=calls.calls,
        predict_failed=calls.failed,
        predict_degraded=calls.degraded,
        recovery_s=None if whole_restart_s is None else round(whole_restart_s, 2),
        invariant_ok=all(checks.values()),
        details={
            "checks": checks,
            "wrong_answers": calls.wrong,
            "defaulted_answers": calls.defaulted,
            "retries": calls.retries,
            "worker_replaced_in_s": None if replaced is None else round(replaced, 2),
            "port_back_in_s": None if back is None else round(back, 2),
            "predict_longest_outage_s": longest_outage_s(calls.timeline),
            "predict_latency": latency_summary(calls.latencies_s),
            "predict_codes": dict(calls.codes),
            "prediction_log_records": len(messages),
            "prediction_log_torn": torn,
            "answered_not_logged": unlogged,
            "work": str(work),
        },
    )


def _answers(target: str, request: pb.PredictRequest) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            "/loopline.v1.Inference/Predict",
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )
        try:
            stub(request, timeout=1.0)
            return True
        except grpc.RpcError:
            return False


def _reference(target: str, pool: list[pb.PredictRequest]) -> dict[bytes, float]:
    """Each request's score before any fault (its one right answer)."""
    out = {}
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            "/loopline.v1.Inference/Predict",
            request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString,
        )
        for request in pool:
            out[request.SerializeToString()] = stub(request, timeout=5.0).score
    return out
