"""Serving replicas: ``loopline run serve --replicas 2`` on the real stack.

Two worker processes share one port (SO_REUSEPORT), as N pods would share a
load balancer: each follows the registry on its own. Every replica must
serve a new champion within 1 s of the alias moving, and a canary plan must
give an entity the same arm on every replica. A response names its replica
through its request id, whose prefix is drawn once per process; the kernel
hashes each connection to one replica, so the tests open connections until
both replicas have some.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

import grpc
import model_factory
import pytest
from confluent_kafka import Producer
from polling import wait_until
from predict_load import PredictLoad
from rollout_support import rollout_cli
from serving_requests import predict_request
from serving_support import (
    announce,
    card_values,
    fresh_features,
    merchant_values,
    serving_settings,
    write_features,
)

from loopline.cli import build_parser
from loopline.config.kafka import producer_config
from loopline.contracts.settings import Settings
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import assign_arm
from loopline.serving import commands
from loopline.serving.supervisor import serve
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc

REPLICAS = 2
PICKUP_BOUND_S = 1.0
CARDS = [f"card-{i}" for i in range(200)]
# A fresh connection per channel: by default gRPC shares one between channels.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def replica_of(response: pb.PredictResponse) -> str:
    return response.request_id.rsplit("-", 1)[0]


@contextlib.contextmanager
def replicas(settings: Settings) -> Iterator[int]:
    """``run serve --replicas 2`` (the supervisor, in a thread) until the block ends; its port."""
    args = build_parser().parse_args(["run", "serve", "--replicas", str(REPLICAS)])
    settings = commands.apply_overrides(args, settings)
    assert settings.serving.processes == REPLICAS
    stop, ready = threading.Event(), threading.Event()
    lines: list[str] = []

    def on_ready(line: str) -> None:
        lines.append(line)
        ready.set()

    thread = threading.Thread(
        target=serve, args=(settings,), kwargs={"stop": stop, "on_ready": on_ready}, daemon=True
    )
    thread.start()
    try:
        assert ready.wait(90), "the replicas did not start"
        assert f"({REPLICAS} processes" in lines[0]
        yield int(lines[0].split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
    finally:
        stop.set()
        thread.join(60)


@contextlib.contextmanager
def connections(port: int, per_replica: int = 2, limit: int = 48) -> Iterator[list[grpc.Channel]]:
    """Channels, each on its own connection, until every replica has ``per_replica`` of them."""
    channels: list[grpc.Channel] = []
    counts: dict[str, int] = {}
    try:
        while len(channels) < limit and not (
            len(counts) == REPLICAS and min(counts.values()) >= per_replica
        ):
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION)
            channels.append(channel)
            answer = pb_grpc.InferenceStub(channel).Predict(predict_request(), timeout=10)
            counts[replica_of(answer)] = counts.get(replica_of(answer), 0) + 1
        assert len(counts) == REPLICAS, f"{limit} connections reached replicas {counts}"
        yield channels
    finally:
        for channel in channels:
            channel.close()


class VersionWatch(PredictLoad):
    """One thread per connection calling Predict without pause: when each replica first
    answered each version (monotonic clock, on receipt), and every failure."""

    def __init__(self, channels: list[grpc.Channel]) -> None:
        super().__init__(port=0, clients=len(channels))
        self.channels = channels
        self.first: dict[tuple[str, str], float] = {}  # (replica, version) -> time
        self.latest: dict[str, str] = {}  # replica -> version of its last answer
        self.went_back: list[str] = []

    def _run(self, client: int) -> None:
        # Each thread on its given connection (PredictLoad's threads share one), and
        # the send time of each call kept, to tell a replica going back from calls
        # in flight across a swap finishing in any order.
        stub = pb_grpc.InferenceStub(self.channels[client])
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                answer = stub.Predict(predict_request(), timeout=5)
            except grpc.RpcError as e:
                with self.lock:
                    self.failures.append(f"{e.code()}: {e.details()}")
                continue
            with self.lock:
                self._answered(sent, time.monotonic(), answer)

    def _answered(self, sent: float, received: float, answer: pb.PredictResponse) -> None:
        replica, version = replica_of(answer), int(answer.model_version)
        self.first.setdefault((replica, str(version)), received)
        newer = [int(v) for (r, v), t in self.first.items() if r == replica and t < sent]
        if newer and version < max(newer):
            self.went_back.append(f"{replica}: v{max(newer)} -> v{version}")
        self.latest[replica] = str(version)

    def answering(self, version: str) -> set[str]:
        with self.lock:
            return {r for r, v in self.latest.items() if v == version}

    def pickups(self, version: str, since: float) -> dict[str, float]:
        with self.lock:
            return {r: t - since for (r, v), t in self.first.items() if v == version}


@pytest.fixture
def env(isolated_settings, redis_client, redis_prefix, tmp_path):
    key_prefix = fresh_features(redis_client, redis_prefix)
    registry = DirectoryRegistry(tmp_path / "registry")
    model_factory.publish(registry, seed=0)  # v1, champion
    # Topic only: with the registry poll off, every replica follows the announcements.
    # Closed-loop clients, up to a few dozen connections on one replica: room for
    # all of them (these tests are about versions, not about shedding).
    settings = serving_settings(
        isolated_settings,
        registry.root,
        key_prefix,
        registry_poll_s=0.0,
        threads=2,
        max_concurrent_rpcs=64,
    )
    return settings, registry, redis_client


def test_every_replica_serves_a_new_champion_within_a_second(env) -> None:
    settings, registry, _ = env
    # The trainer's announcer lives as long as the trainer: warm, as here. (A fresh
    # idempotent producer spends ~0.5 s getting its producer id before its first send.)
    producer = Producer(producer_config(settings.kafka))
    announce(settings, registry.get("fraud", "1"), producer=producer)
    pickups: dict[str, dict[str, float]] = {}  # version -> replica -> seconds
    with replicas(settings) as port, connections(port) as channels, VersionWatch(channels) as w:
        wait_until(lambda: len(w.answering("1")) == REPLICAS, what="both replicas on v1")
        for seed in (1, 2, 3):
            mv = model_factory.publish(registry, seed=seed, alias=None)
            version = mv.manifest.version
            # Published as the trainer does: the alias moves, then the announcement.
            since = time.monotonic()
            registry.set_alias("fraud", "champion", version)
            announce(settings, mv, producer=producer)
            wait_until(
                lambda v=version: len(w.answering(v)) == REPLICAS,
                timeout_s=10,
                what=lambda v=version: f"both replicas on v{v}: {w.latest}",
            )
            pickups[version] = w.pickups(version, since)
    print("pickup seconds by version and replica:", pickups)  # shown with -s
    assert w.failures == []
    assert w.went_back == []
    for version, by_replica in pickups.items():
        assert len(by_replica) == REPLICAS
        assert max(by_replica.values()) <= PICKUP_BOUND_S, (version, by_replica)


def test_a_canary_plan_gives_an_entity_one_arm_on_every_replica(env) -> None:
    settings, registry, redis_client = env
    now = time.time()
    for card in CARDS:
        write_features(redis_client, settings.streams.redis_key_prefix, "card", card,
                       values=card_values(), t=now)  # fmt: skip
    write_features(redis_client, settings.streams.redis_key_prefix, "merchant", "m1",
                   values=merchant_values(), t=now)  # fmt: skip
    model_factory.publish(registry, seed=4, n_trees=30, alias=None)  # v2, the candidate
    # The plan must stay up for the comparison: no abort on a latency blip of a busy machine.
    settings = dataclasses.replace(
        settings, rollout=dataclasses.replace(settings.rollout, auto_abort=False)
    )
    with replicas(settings) as port, connections(port, per_replica=3) as channels:
        assert rollout_cli(settings, "start", "2", "--mode", "canary", "--share", "0.5") == 0
        plan = registry.rollout("fraud")
        expected = {card: assign_arm(plan, card) for card in CARDS}
        stubs = [pb_grpc.InferenceStub(c) for c in channels]

        def ask(stub: pb_grpc.InferenceStub, card: str) -> pb.PredictResponse:
            request = predict_request(entities={"card_id": card, "merchant_id": "m1"})
            return stub.Predict(request, timeout=10)

        # Each replica loads the candidate on its own; until then its champion answers.
        candidate_cards = [c for c, arm in expected.items() if arm == "candidate"]
        # (the connections reach every replica, so all answering it means all have it)
        wait_until(
            lambda: all(ask(s, candidate_cards[0]).arm == "candidate" for s in stubs),
            timeout_s=10,
            what="the candidate on every replica",
        )
        arms: dict[str, dict[str, set[str]]] = {}  # card -> replica -> arms answered
        for stub in stubs:
            for card in CARDS:
                answer = ask(stub, card)
                arms.setdefault(card, {}).setdefault(replica_of(answer), set()).add(
                    f"{answer.arm}:{answer.model_version}"
                )
    version = {"champion": "1", "candidate": "2"}
    for card, by_replica in arms.items():
        assert len(by_replica) == REPLICAS, (card, by_replica)
        want = f"{expected[card]}:{version[expected[card]]}"
        assert all(seen == {want} for seen in by_replica.values()), (card, by_replica)
    assert 0.35 < len(candidate_cards) / len(CARDS) < 0.65
