"""`loopline run rollout` on the real broker: labels in, promotions and aborts out."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka_support import kafka_env, produce_records
from polling import wait_until
from rollout_support import labeled_examples, registry_with_versions, with_registry
from synthetic_fraud import synthetic_history, write_jsonl
from trainer_support import GATE_ALWAYS_PASSES, quick_trainer_settings, run_cli

from loopline.contracts.schemas import ModelUpdate, decode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import model_of
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.rollout.policy import RolloutPolicy
from loopline.trainer import commands
from loopline.trainer.kafka_io import KafkaAnnouncer, read_history
from loopline.trainer.rollout import watch_loop as rollout_watch_loop
from loopline.trainer.rollout.label_source import kafka_label_sources
from loopline.trainer.rollout.watcher import RolloutWatcher

DEADLINE_S = 45.0
MIN_LABELS = 50


@pytest.fixture
def settings(isolated_settings: Settings, tmp_path: Path) -> Settings:
    s = with_registry(isolated_settings, tmp_path / "registry")
    return dataclasses.replace(
        s,
        rollout=dataclasses.replace(
            s.rollout, min_labels=MIN_LABELS, decide_every_s=0.3, metrics_port=0
        ),
    )


@pytest.fixture
def reg(settings: Settings) -> DirectoryRegistry:
    return registry_with_versions(settings.registry.path, model_of(settings).name)


def examples(model: str, version: str, n: int, t_ms: int, signal: float) -> list[bytes]:
    """Labeled records scored by ``version``; ``signal`` separates the classes (<0: inverted)."""
    return labeled_examples(
        model, version, n, t_ms, signal, request_id="r-{version}-{t_ms}-{i}", event_id="e-{i}",
        fingerprint="fp",
    )  # fmt: skip


def produce(settings: Settings, records: list[bytes], timestamp_ms: int | None = None) -> None:
    """Acknowledged records on the labeled topic (Kafka timestamp: now, unless given)."""
    topic = Topics(settings.kafka.topic_prefix).labeled
    keyed = [(topic, str(i).encode(), value) for i, value in enumerate(records)]
    produce_records(settings, keyed, timestamp_ms=timestamp_ms)


def start_plan(reg: DirectoryRegistry, model: str, candidate: str, mode: str) -> RolloutPlan:
    champion = reg.aliases(model)["champion"]
    plan = RolloutPlan.start(
        model, candidate=candidate, champion=champion, mode=mode, canary_share=0.1
    )
    reg.start_rollout(plan)
    return plan


def wait_for(check: Callable[[], bool], what: str) -> None:
    wait_until(check, timeout_s=DEADLINE_S, what=what, interval_s=0.1)


def updates(settings: Settings) -> list[ModelUpdate]:
    topic = Topics(settings.kafka.topic_prefix).model_updates
    return [decode(ModelUpdate, raw) for raw in read_history(settings.kafka, topic)]


@pytest.fixture
def watching(settings: Settings, reg: DirectoryRegistry) -> Iterator[RolloutWatcher]:
    """The watcher of ``loopline run rollout``, running in a thread for the test."""
    topics = Topics(settings.kafka.topic_prefix)
    announcer = KafkaAnnouncer(settings.kafka, topics.model_updates)
    watcher = RolloutWatcher(
        reg,
        model_of(settings).name,
        open_source=kafka_label_sources(settings),
        new_policy=lambda: RolloutPolicy.from_settings(settings.rollout),
        announcer=announcer,
        decide_every_s=settings.rollout.decide_every_s,
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            watcher.run(stop)
        except BaseException as e:  # surfaced by the test below
            errors.append(e)

    thread = threading.Thread(target=run, name="rollout-watcher")
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        thread.join(30)
        watcher.close()
        announcer.close()
    assert not thread.is_alive() and not errors, errors


def test_watcher_promotes_then_aborts_and_ignores_foreign_labels(
    settings: Settings, reg: DirectoryRegistry, watching: RolloutWatcher
) -> None:
    model = model_of(settings).name

    def state() -> str:
        plan = reg.rollout(model)
        return plan.state if plan else "none"

    # Plan 1: v2 in canary. Many bad labels that are not this plan's come first. Counted,
    # they would abort it: v2 records from before the plan started, by Kafka time (history
    # the watcher must not even read: it seeks to the plan's start), by event time, and v3's.
    t0 = int(time.time() * 1000)
    plan = RolloutPlan.start(model, candidate="2", champion="1", mode="canary", created_ms=t0)
    produce(settings, examples(model, "2", 300, t0 + 1, -0.3), timestamp_ms=t0 - 600_000)
    reg.start_rollout(plan)
    wait_for(lambda: watching.watch is not None, "the watcher to pick the plan up")
    after = t0 + 1
    produce(settings, examples(model, "2", 300, t0 - 5_000, -0.3))
    produce(settings, examples(model, "3", 300, after, -0.3))
    produce(settings, examples(model, "1", 70, after, 0.3) + examples(model, "2", 70, after, 0.35))
    wait_for(lambda: state() != "running", "the first plan to end")
    done = reg.rollout(model)
    assert done is not None and done.plan_id == plan.plan_id and done.state == "promoted", done
    assert done.reason.startswith("policy: candidate not worse after")
    assert reg.aliases(model) == {"champion": "2"}

    # Plan 2: v3 in shadow, clearly worse than the new champion v2.
    plan2 = start_plan(reg, model, "3", "shadow")
    after = plan2.created_ms + 1
    produce(settings, examples(model, "2", 70, after, 0.3) + examples(model, "3", 70, after, 0.0))
    wait_for(lambda: state() != "running", "the second plan to end")
    done2 = reg.rollout(model)
    assert done2 is not None and done2.plan_id == plan2.plan_id and done2.state == "aborted"
    assert "quality regression" in done2.reason
    assert reg.aliases(model) == {"champion": "2"}

    wait_for(lambda: len(updates(settings)) >= 2, "both announcements")
    got = updates(settings)
    assert [(u.action, u.alias, u.version) for u in got] == [
        ("rollout", "champion", "2"),
        ("rollout", "champion", "2"),
    ]
    assert [RolloutPlan.from_dict(u.plan) for u in got] == [done, done2]
    assert got[0].sha256 == reg.get(model, "2").manifest.sha256


def test_a_plan_aborted_elsewhere_is_dropped_and_the_next_one_followed(
    settings: Settings, reg: DirectoryRegistry, watching: RolloutWatcher
) -> None:
    model = model_of(settings).name
    first = start_plan(reg, model, "2", "canary")
    wait_for(lambda: watching.watch is not None, "the watcher to pick the plan up")
    assert reg.finish_rollout(model, first.plan_id, "aborted", "by hand") is not None
    wait_for(lambda: watching.watch is None, "the watcher to drop the plan")

    second = start_plan(reg, model, "3", "canary")
    wait_for(
        lambda: watching.watch is not None and watching.watch.plan.plan_id == second.plan_id,
        "the watcher to follow the next plan",
    )
    after = second.created_ms + 1
    produce(settings, examples(model, "1", 60, after, 0.3) + examples(model, "3", 60, after, 0.35))
    wait_for(lambda: reg.aliases(model).get("champion") == "3", "the promotion of v3")
    done = reg.rollout(model)
    assert done is not None and (done.plan_id, done.state) == (second.plan_id, "promoted")
    # Only what the watcher ended is announced by it; "by hand" was someone else's.
    got = updates(settings)
    assert [RolloutPlan.from_dict(u.plan).plan_id for u in got] == [second.plan_id]


def test_publish_as_canary_then_run_rollout_promotes(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`loopline train --publish-as canary` starts a plan; `loopline run rollout` ends it."""
    settings = quick_trainer_settings(settings, tmp_path, num_trees=30, **GATE_ALWAYS_PASSES)
    txs, outcomes = synthetic_history(n_cards=250, hours=30, seed=3)
    boot = [
        "--bootstrap-events",
        str(write_jsonl(tmp_path / "events.jsonl", txs)),
        "--bootstrap-outcomes",
        str(write_jsonl(tmp_path / "outcomes.jsonl", outcomes)),
    ]

    def run(*argv: str) -> int:
        return run_cli(settings, argv, commands.register, rollout_watch_loop.register)

    model = model_of(settings).name
    reg = DirectoryRegistry(settings.registry.path)
    assert run("train", *boot) == 0
    assert run("train", *boot, "--publish-as", "canary") == 0
    plan = reg.rollout(model)
    assert (
        plan is not None
        and plan.running
        and (plan.mode, plan.candidate_version)
        == (
            "canary",
            "2",
        )
    )
    assert reg.aliases(model) == {"champion": "1", "candidate": "2"}
    got = updates(settings)
    assert [(u.action, u.version) for u in got] == [("publish", "1"), ("rollout", "1")]
    assert RolloutPlan.from_dict(got[1].plan) == plan

    after = plan.created_ms + 1
    produce(settings, examples(model, "1", 60, after, 0.3) + examples(model, "2", 60, after, 0.35))
    capsys.readouterr()
    assert run("run", "rollout", "--max-plans", "1", "--max-seconds", str(DEADLINE_S)) == 0
    assert "1 plan(s) stopped running, 1 ended by the policy" in capsys.readouterr().out
    done = reg.rollout(model)
    assert done is not None and done.state == "promoted"
    assert reg.aliases(model) == {"champion": "2"}
    last = updates(settings)[-1]
    assert (last.action, last.version, RolloutPlan.from_dict(last.plan).state) == (
        "rollout",
        "2",
        "promoted",
    )


SERVICE = textwrap.dedent(
    """
    import argparse, sys
    from loopline.config.loader import load_settings
    from loopline.trainer.rollout import watch_loop as rollout_watch_loop
    p = argparse.ArgumentParser(prog="loopline")
    rollout_watch_loop.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(sys.argv[1:])
    args.settings = load_settings()
    sys.exit(args.func(args))
    """
)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_service_exports_metrics_and_stops_on_sigterm(
    settings: Settings,
    reg: DirectoryRegistry,
    unused_tcp_port_factory: Callable[[], int],
) -> None:
    model = model_of(settings).name
    plan = start_plan(reg, model, "2", "shadow")
    after = plan.created_ms + 1
    # Below min_labels on the candidate: the plan keeps running.
    produce(settings, examples(model, "1", 60, after, 0.3) + examples(model, "2", 20, after, 0.3))
    port = unused_tcp_port_factory()
    env = {
        **os.environ,
        **kafka_env(settings),
        "LOOPLINE_REGISTRY__PATH": str(settings.registry.path),
        "LOOPLINE_PROJECT__MODEL": model,
        "LOOPLINE_ROLLOUT__MIN_LABELS": str(MIN_LABELS),
        "LOOPLINE_ROLLOUT__DECIDE_EVERY_S": "0.3",
        "LOOPLINE_ROLLOUT__METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE, "run", "rollout"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        labels = f'loopline_rollout_arm_labels{{arm="candidate",model="{model}"}} 20.0'
        text = ""

        def counted() -> bool:
            nonlocal text
            try:
                text = scrape(port)
            except OSError:
                return proc.poll() is not None  # not up yet, unless it died
            return labels in text

        try:
            wait_for(counted, "the candidate's labels in the metrics")
        except AssertionError:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"metrics:\n{text}\nstdout:\n{out}\nstderr:\n{err}") from None
        assert proc.poll() is None, proc.communicate()
        assert f'loopline_rollout_running{{model="{model}"}} 1.0' in text
        assert f'loopline_rollout_arm_labels{{arm="champion",model="{model}"}} 60.0' in text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "0 plan(s) stopped running" in out
    assert f"rollout {plan.plan_id} of {model} started: v2 in shadow" in err
    assert "continue: waiting for labels: candidate 20, champion 60" in err
    current = reg.rollout(model)
    assert current is not None and current.running  # nothing decided without enough labels
