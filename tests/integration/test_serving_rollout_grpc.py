"""Rollouts on the real stack: gRPC under load through shadow, canary, promotion, abort, restart."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import grpc
import model_factory
import pytest
from polling import wait_until
from predict_load import PredictLoad
from rollout_support import rollout_cli
from serving_support import (
    card_values,
    merchant_values,
    running_server,
    serving_settings,
    write_features,
)

from loopline.contracts.schemas import ModelUpdate, PredictionLog, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.trainer.kafka_io import read_history
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

CARDS = [f"card-{i}" for i in range(40)]
FAIL_ABOVE = 10_000.0


def cli(settings: Settings, *argv: str) -> None:
    assert rollout_cli(settings, *argv) == 0


class Load(PredictLoad):
    """Calls for every card in turn: the answers by arm and version, and each card's arms."""

    def __init__(self, port: int, clients: int = 3, amount: float = 42.0) -> None:
        super().__init__(port, clients)
        self.amount = amount
        self.answers: Counter[tuple[str, str]] = Counter()  # (arm, version)
        self.by_card: dict[str, set[str]] = {}

    def request(self, client: int, call: int) -> pb.PredictRequest:
        i = client + call
        card = CARDS[i % len(CARDS)]
        return pb.PredictRequest(
            entities={"card_id": card, "merchant_id": "m1"},
            fields={"amount": self.amount},
            event_id=f"{card}-{i + 1}-{client}",
        )

    def record(self, request: pb.PredictRequest, response: pb.PredictResponse) -> None:
        self.answers[(response.arm, response.model_version)] += 1
        arm = f"{response.arm}:{response.model_version}"
        self.by_card.setdefault(request.entities["card_id"], set()).add(arm)

    def count(self, arm: str, version: str) -> int:
        with self.lock:
            return self.answers[(arm, version)]

    def more(self, arm: str, version: str, n: int = 50) -> None:
        seen = self.count(arm, version)
        wait_until(
            lambda: self.count(arm, version) >= seen + n,
            timeout_s=30,
            what=f"{n} answers by {arm} v{version}",
        )

    def reset_cards(self) -> None:
        with self.lock:
            self.by_card.clear()


@pytest.fixture
def env(isolated_settings, redis_client, redis_prefix, tmp_path):
    key_prefix = redis_prefix.rstrip(":")
    now = time.time()
    for card in CARDS:
        write_features(redis_client, key_prefix, "card", card, values=card_values(), t=now)
    write_features(redis_client, key_prefix, "merchant", "m1", values=merchant_values(), t=now)
    registry = DirectoryRegistry(tmp_path / "registry")
    model_factory.publish(registry, seed=0)  # v1, champion
    model_factory.publish(registry, seed=4, n_trees=30, alias=None)  # v2
    settings = serving_settings(isolated_settings, registry.root, key_prefix, registry_poll_s=0.0)
    settings = dataclasses.replace(
        settings,
        rollout=dataclasses.replace(settings.rollout, min_calls=100, decide_every_s=0.5),
    )
    return settings, registry


def test_every_transition_under_load_fails_no_call(env) -> None:
    settings, registry = env
    topics = Topics(settings.kafka.topic_prefix)
    assert registry.resolve("fraud", "champion").manifest.version == "1"
    # The registry poll is off: the server follows each change from its announcement.
    with running_server(settings) as server, Load(server.port) as load:
        load.more("champion", "1")

        cli(settings, "start", "2", "--mode", "shadow")
        wait_until(lambda: server.core.shadow.scored >= 100, timeout_s=30, what="shadow scores")
        load.more("champion", "1")
        assert load.count("candidate", "2") == 0  # shadow never answers

        cli(settings, "abort", "--reason", "switch to canary")
        wait_until(lambda: server.rollout.arms.plan is None, what="the abort followed")
        cli(settings, "start", "2", "--mode", "canary", "--share", "0.5")
        load.more("candidate", "2")
        load.more("champion", "1")
        load.reset_cards()
        load.more("candidate", "2", n=200)
        # Sticky under load: every card got one arm throughout the plan.
        assert all(len(arms) == 1 for arms in load.by_card.values()), load.by_card

        cli(settings, "promote", "--reason", "looks good")
        load.more("champion", "2")  # the candidate is the champion now, answering for everyone
        assert server.rollout.arms.plan is None
        assert server.slot.current.version == "2"
        assert registry.aliases("fraud") == {"champion": "2"}

    assert load.failures == []
    # Shadow scores and canary answers are both on the predictions topic, by arm.
    logs = [decode(PredictionLog, raw) for raw in read_history(settings.kafka, topics.predictions)]
    shadow = [p for p in logs if p.request_id.endswith("/shadow")]
    assert shadow and {(p.arm, p.model_version) for p in shadow} == {("candidate", "2")}
    answered = {p.request_id for p in logs}
    assert all(p.request_id.removesuffix("/shadow") in answered for p in shadow)
    assert {(p.arm, p.model_version) for p in logs if not p.request_id.endswith("/shadow")} == {
        ("champion", "1"),
        ("candidate", "2"),
        ("champion", "2"),
    }


def test_an_injected_error_regression_is_aborted_by_serving(env) -> None:
    settings, registry = env
    topics = Topics(settings.kafka.topic_prefix)
    faulty = model_factory.publish_faulty(registry, fail_above=FAIL_ABOVE)
    v = faulty.manifest.version
    with running_server(settings) as server, Load(server.port, amount=FAIL_ABOVE * 3) as load:
        load.more("champion", "1")
        cli(settings, "start", v, "--mode", "canary", "--share", "0.5")
        wait_until(
            lambda: registry.rollout("fraud").state == "aborted",
            timeout_s=30,
            what="serving's auto-abort",
        )
        plan = registry.rollout("fraud")
        assert "error rate regression" in plan.reason
        wait_until(lambda: server.rollout.arms.plan is None, what="the plan dropped")
        load.more("champion", "1")
        sample = server.metrics.registry.get_sample_value
        labels = {"arm": "candidate", "path": "answer", "result": "error"}
        assert sample("loopline_serving_arm_calls_total", labels) >= 100
    # Every failed candidate run fell back to the champion's answer.
    assert load.failures == []
    assert load.count("candidate", v) == 0
    updates = [decode(ModelUpdate, r) for r in read_history(settings.kafka, topics.model_updates)]
    states = [RolloutPlan.from_dict(u.plan).state for u in updates if u.action == "rollout"]
    assert states == ["running", "aborted"]  # the CLI's start, serving's abort


def test_a_running_plan_survives_a_serving_restart(env) -> None:
    settings, registry = env
    cli(settings, "start", "2", "--mode", "canary", "--share", "0.5")

    def arms_by_card(port: int) -> dict[str, str]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            return {
                card: stub.Predict(
                    pb.PredictRequest(
                        entities={"card_id": card, "merchant_id": "m1"}, fields={"amount": 5.0}
                    ),
                    timeout=5,
                ).arm
                for card in CARDS
            }

    with running_server(settings) as server:
        before = arms_by_card(server.port)
    with running_server(settings) as server:
        assert server.rollout.arms.plan == registry.rollout("fraud")
        after = arms_by_card(server.port)
    assert before == after
    assert set(before.values()) == {"champion", "candidate"}
