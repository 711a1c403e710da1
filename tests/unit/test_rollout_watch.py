"""The rollout watcher's per-plan core, on a temporary registry and in-memory label sources."""

from __future__ import annotations

import argparse
import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from rollout_support import ListSource, labeled_examples, registry_with_versions
from trainer_support import Announcements

from loopline.contracts import metric_names as mn
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.rollout.policy import RolloutPolicy
from loopline.trainer.rollout.evidence import PlanWatch
from loopline.trainer.rollout.watch_loop import register
from loopline.trainer.rollout.watch_metrics import RolloutMetrics
from loopline.trainer.rollout.watcher import PlanEnd, RolloutWatcher

MODEL = "fraud"


def examples(version: str, n: int, t_ms: int, signal: float, model: str = MODEL) -> list[bytes]:
    """Labeled records scored by ``version``; ``signal`` separates the classes (0: none)."""
    return labeled_examples(model, version, n, t_ms, signal)


class Sources:
    def __init__(self) -> None:
        self.opened: list[ListSource] = []

    def __call__(self, plan: RolloutPlan) -> ListSource:
        self.opened.append(ListSource(plan))
        return self.opened[-1]

    @property
    def last(self) -> ListSource:
        return self.opened[-1]


@pytest.fixture
def reg(tmp_path: Path) -> DirectoryRegistry:
    return registry_with_versions(tmp_path, MODEL, versions=4)


def start(reg: DirectoryRegistry, candidate: str, created_ms: int = 1_000_000) -> RolloutPlan:
    champion = reg.aliases(MODEL)["champion"]
    plan = RolloutPlan.start(
        MODEL, candidate=candidate, champion=champion, mode="canary", canary_share=0.2,
        created_ms=created_ms,
    )  # fmt: skip
    reg.start_rollout(plan)
    return plan


def watcher(reg: object, sources: Sources, **kw: object) -> RolloutWatcher:
    return RolloutWatcher(
        reg,  # type: ignore[arg-type]
        MODEL,
        open_source=sources,
        new_policy=lambda: RolloutPolicy(min_labels=50),
        **kw,  # type: ignore[arg-type]
    )


def better_candidate(after: int) -> list[bytes]:
    """60 labels an arm: candidate v2 separates the classes a little better than champion v1."""
    return examples("2", 60, after, 0.35) + examples("1", 60, after, 0.3)


def decide(
    reg: DirectoryRegistry,
    w: RolloutWatcher,
    sources: Sources,
    candidate: str,
    labels: Callable[[int], list[bytes]],
) -> PlanEnd | None:
    """Start a plan for ``candidate``, let ``w`` pick it up, feed it ``labels(after its start)``
    and return the next tick's outcome."""
    plan = start(reg, candidate)
    w.tick()
    sources.last.pending += labels(plan.created_ms + 1)
    w.pump(0.1)
    return w.tick()


def sample(metrics: RolloutMetrics, metric: mn.Metric, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric.series, labels)


def test_plan_watch_counts_only_the_plans_examples() -> None:
    plan = RolloutPlan(MODEL, "3", "2", plan_id="p", created_ms=1000)
    watch = PlanWatch(plan, RolloutPolicy(min_labels=1))
    records = (
        examples("3", 4, 1000, 0.3)  # candidate, at the start: counted
        + examples("2", 3, 5000, 0.3)  # champion: counted
        + examples("3", 5, 999, 0.3)  # before the plan
        + examples("1", 2, 5000, 0.3)  # another version
        + examples("3", 2, 5000, 0.3, model="other")  # another model
        + [b"not json", b'{"request_id": "r"}']
    )
    assert sum(watch.offer(r) for r in records) == 7
    assert (watch.counted, watch.ignored, watch.malformed) == (7, 9, 2)
    arms = watch.policy.arms
    assert (arms["candidate"].labels, arms["champion"].labels) == (4, 3)


def test_promotes_after_enough_labels_and_announces(reg: DirectoryRegistry) -> None:
    sources, sent = Sources(), Announcements()
    metrics = RolloutMetrics(CollectorRegistry())
    w = watcher(reg, sources, announcer=sent, metrics=metrics)
    assert w.tick() is None and w.watch is None and not sources.opened

    plan = start(reg, "2")
    assert w.tick() is None  # the plan is picked up: its labels are read from its start
    assert sources.last.plan == plan and w.watch is not None
    assert sample(metrics, mn.ROLLOUT_RUNNING, model=MODEL) == 1
    after = plan.created_ms + 1
    # The candidate separates the classes a little better than the champion.
    sources.last.pending += examples("2", 30, after, 0.35) + examples("1", 60, after, 0.3)
    assert w.pump(0.1) == 90
    assert w.tick() is None and w.last_decision is not None
    assert w.last_decision.action == "continue" and "candidate 30" in w.last_decision.reason
    assert sample(metrics, mn.ROLLOUT_ARM_LABELS, model=MODEL, arm="candidate") == 30
    assert reg.rollout(MODEL) == plan  # still running

    sources.last.pending += examples("2", 30, after + 5, 0.35)
    w.pump(0.1)
    end = w.tick()
    assert end is not None and end.decision is not None and end.decision.action == "promote"
    done = reg.rollout(MODEL)
    assert done is not None and done == end.finished and done.state == "promoted"
    assert done.reason.startswith("policy: candidate not worse after 60 labels")
    assert reg.aliases(MODEL) == {"champion": "2"}
    assert sources.last.closed and w.watch is None
    # One announcement: the new champion, with the finished plan.
    assert [(u.action, u.version, u.alias) for u in sent.sent] == [("rollout", "2", "champion")]
    assert RolloutPlan.from_dict(sent.sent[0].plan) == done
    assert sample(metrics, mn.ROLLOUT_DECISIONS, model=MODEL, action="promote") == 1
    assert sample(metrics, mn.ROLLOUT_RUNNING, model=MODEL) == 0
    auc = sample(metrics, mn.ROLLOUT_ARM_AUC, model=MODEL, arm="champion")
    log_loss = sample(metrics, mn.ROLLOUT_ARM_LOG_LOSS, model=MODEL, arm="candidate")
    assert auc is not None and 0.8 < auc <= 1.0
    assert log_loss is not None and 0.0 < log_loss < 0.7


def test_aborts_a_clearly_worse_candidate(reg: DirectoryRegistry) -> None:
    sources, sent = Sources(), Announcements()
    w = watcher(reg, sources, announcer=sent)
    end = decide(
        reg, w, sources, "3", lambda t: examples("1", 80, t, 0.3) + examples("3", 80, t, 0.0)
    )
    assert end is not None and end.finished is not None
    assert end.finished.state == "aborted" and "quality regression" in end.finished.reason
    assert reg.aliases(MODEL) == {"champion": "1"}
    assert [RolloutPlan.from_dict(u.plan).state for u in sent.sent] == ["aborted"]
    assert sent.sent[0].version == "1"


def test_a_plan_ended_elsewhere_is_dropped_and_the_next_starts_fresh(
    reg: DirectoryRegistry,
) -> None:
    sources, sent = Sources(), Announcements()
    w = watcher(reg, sources, announcer=sent)
    first = start(reg, "2")
    w.tick()
    sources.last.pending += examples("2", 40, first.created_ms, 0.3)
    w.pump(0.1)
    assert reg.finish_rollout(MODEL, first.plan_id, "aborted", "by hand") is not None

    end = w.tick()
    assert end is not None and (end.plan, end.decision, end.finished) == (first, None, None)
    assert sources.opened[0].closed and w.watch is None

    second = start(reg, "3", created_ms=2_000_000)
    assert w.tick() is None
    assert len(sources.opened) == 2 and sources.last.plan == second
    assert w.watch is not None and w.watch.policy.arms["candidate"].labels == 0
    assert sent.sent == []  # the watcher announces only what it ended


def test_losing_the_compare_and_set_writes_and_announces_nothing(
    reg: DirectoryRegistry,
) -> None:
    class Raced:
        """Serving aborts the plan just before the watcher's write."""

        def __getattr__(self, name: str) -> object:
            return getattr(reg, name)

        def finish_rollout(self, model: str, plan_id: str, state: str, reason: str) -> None:
            reg.finish_rollout(model, plan_id, "aborted", "error rate regression")
            assert reg.finish_rollout(model, plan_id, state, reason) is None

    sources, sent = Sources(), Announcements()
    w = watcher(Raced(), sources, announcer=sent)
    end = decide(reg, w, sources, "2", better_candidate)
    assert end is not None and end.decision is not None and end.finished is None
    last = reg.rollout(MODEL)
    assert last is not None and last.reason == "error rate regression"
    assert sent.sent == [] and w.watch is None


def test_an_unacknowledged_announcement_is_retried_on_the_next_tick(
    reg: DirectoryRegistry,
) -> None:
    sources, sent = Sources(), Announcements(failures=1)
    w = watcher(reg, sources, announcer=sent)
    end = decide(reg, w, sources, "2", better_candidate)
    assert end is not None and end.finished is not None and end.finished.state == "promoted"
    assert sent.sent == [] and len(w.outbox) == 1
    assert w.tick() is None
    assert w.outbox == [] and [RolloutPlan.from_dict(u.plan).state for u in sent.sent] == [
        "promoted"
    ]


def test_a_pinned_watcher_follows_its_plan_only(reg: DirectoryRegistry) -> None:
    sources = Sources()
    w = watcher(reg, sources, plan_id="someone-else")
    start(reg, "2")
    assert w.tick() is None and w.tick() is None
    assert sources.opened == [] and w.watch is None


def test_run_reads_and_decides_until_the_plan_ends(reg: DirectoryRegistry) -> None:
    sources, sent = Sources(), Announcements()
    w = watcher(reg, sources, announcer=sent, decide_every_s=0.05)
    plan = start(reg, "2")
    after = plan.created_ms + 1

    def feed_when_open(stop: threading.Event) -> None:
        while not sources.opened and not stop.wait(0.01):
            pass
        sources.last.pending += better_candidate(after)

    stop = threading.Event()
    feeder = threading.Thread(target=feed_when_open, args=(stop,))
    feeder.start()
    try:
        ended = w.run(stop, deadline_s=30, max_plans=1)
    finally:
        stop.set()
        feeder.join()
    assert [e.finished.state if e.finished else None for e in ended] == ["promoted"]
    assert reg.aliases(MODEL) == {"champion": "2"} and len(sent.sent) == 1

    # Stopping is prompt: a set event ends the loop at once, with no plan running.
    stop = threading.Event()
    stop.set()
    assert w.run(stop, deadline_s=30) == []


def test_metrics_are_the_declared_ones() -> None:
    metrics = RolloutMetrics(CollectorRegistry())
    metrics.evidence(MODEL, {"champion": {"labels": 3, "auc": 0.9, "log_loss": 0.3}})
    metrics.running.labels(MODEL).set(1)
    metrics.decisions.labels(MODEL, "abort").inc()
    declared = {m.name: m for m in mn.ALL if m.component == "trainer"}
    exported = {f.name: f for f in metrics.registry.collect()}
    assert set(exported) == {
        m.name
        for m in (
            mn.ROLLOUT_ARM_LABELS,
            mn.ROLLOUT_ARM_AUC,
            mn.ROLLOUT_ARM_LOG_LOSS,
            mn.ROLLOUT_DECISIONS,
            mn.ROLLOUT_RUNNING,
        )
    }
    for name, family in exported.items():
        assert family.type == declared[name].kind
        for s in family.samples:
            assert set(s.labels) <= set(declared[name].labels), (name, s.labels)
    # An arm with no evidence yet reads NaN, not a made-up number.
    auc = metrics.registry.get_sample_value(
        mn.ROLLOUT_ARM_AUC.series, {"model": MODEL, "arm": "candidate"}
    )
    assert auc is not None and math.isnan(auc)


def test_register_adds_run_rollout_to_the_shared_run_group() -> None:
    p = argparse.ArgumentParser(prog="loopline")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run").add_subparsers(dest="run_command", required=True)
    run.add_parser("serving")
    register(sub)
    args = p.parse_args(["run", "rollout", "--max-plans", "2", "--metrics-port", "0"])
    assert (args.run_command, args.max_plans, args.metrics_port, args.no_announce) == (
        "rollout", 2, 0, False,
    )  # fmt: skip
    assert callable(args.func)
    assert p.parse_args(["run", "serving"]).run_command == "serving"
