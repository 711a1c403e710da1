"""The registry's rollout record: aliases moved with the plan, history, atomic writes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from rollout_support import registry_with_versions

from loopline.contracts.errors import ModelError, ModelNotFoundError
from loopline.registry.directory import DirectoryRegistry
from loopline.rollout.plan import RolloutPlan


def registry(tmp_path: Path, versions: int = 3) -> DirectoryRegistry:
    return registry_with_versions(tmp_path, versions=versions)


def start(candidate: str = "2", **kw: object) -> RolloutPlan:
    return RolloutPlan.start(
        "fraud", candidate=candidate, champion="1", mode="canary", canary_share=0.2, **kw
    )  # type: ignore[arg-type]


def test_no_plan_until_one_is_set(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    assert reg.rollout("fraud") is None and reg.rollout_history("fraud") == []


def test_promote_moves_champion_and_keeps_history(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    plan = start()
    reg.set_rollout(plan)
    assert reg.rollout("fraud") == plan
    assert reg.aliases("fraud") == {"champion": "1", "candidate": "2"}
    done = plan.finished("promoted", "not worse after 1000 labels")
    reg.set_rollout(done)
    assert reg.aliases("fraud") == {"champion": "2"}
    assert reg.rollout("fraud") == done
    assert [p.state for p in reg.rollout_history("fraud")] == ["running", "promoted"]
    # The champion move is an ordinary alias move: `models rollback` can undo it.
    assert reg.alias_history("fraud", "champion") == ["1", "2"]
    assert reg.rollback("fraud") == "1"


def test_abort_leaves_the_champion(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    plan = start("3")
    reg.set_rollout(plan)
    reg.set_rollout(plan.finished("aborted", "error rate regression"))
    assert reg.aliases("fraud") == {"champion": "1"}
    current = reg.rollout("fraud")
    assert current is not None and (current.state, current.reason) == (
        "aborted",
        "error rate regression",
    )
    second = start("2")
    reg.set_rollout(second)
    history = reg.rollout_history("fraud")
    assert [(p.plan_id, p.state) for p in history] == [
        (plan.plan_id, "running"),
        (plan.plan_id, "aborted"),
        (second.plan_id, "running"),
    ]
    # Survives a new registry object (a restarted process).
    assert DirectoryRegistry(tmp_path).rollout("fraud") == second


def test_a_plan_needs_an_existing_candidate(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    with pytest.raises(ModelNotFoundError):
        reg.set_rollout(start("9"))
    assert reg.rollout("fraud") is None and "candidate" not in reg.aliases("fraud")


def test_a_corrupt_record_is_a_model_error(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    (tmp_path / "fraud" / "rollout.json").write_text("{not json")
    with pytest.raises(ModelError):
        reg.rollout("fraud")


def test_readers_never_see_a_partial_record(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.set_rollout(start())
    stop = threading.Event()
    seen: list[str] = []
    failures: list[BaseException] = []

    def read() -> None:
        reader = DirectoryRegistry(tmp_path)
        while not stop.is_set():
            try:
                plan = reader.rollout("fraud")
                assert plan is not None
                seen.append(plan.plan_id)
            except BaseException as e:
                failures.append(e)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(100):
            reg.set_rollout(start(plan_id=f"p{i}"))
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures[0]
    assert seen
    doc = json.loads((tmp_path / "fraud" / "rollout.json").read_text())
    assert doc["plan"]["plan_id"] == "p99" and len(doc["history"]) == 101
    leftovers = [p.name for p in (tmp_path / "fraud").iterdir() if p.name.startswith(".rollout")]
    assert leftovers == []


def test_start_refuses_while_a_plan_runs(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    first = start()
    reg.start_rollout(first)
    with pytest.raises(ModelError, match="running"):
        reg.start_rollout(start("3"))
    assert reg.rollout("fraud") == first and reg.aliases("fraud")["candidate"] == "2"
    with pytest.raises(ModelError):
        reg.start_rollout(start("3").finished("aborted", "x"))
    reg.finish_rollout("fraud", first.plan_id, "aborted", "make room")
    reg.start_rollout(start("3"))
    assert reg.aliases("fraud") == {"champion": "1", "candidate": "3"}


def test_finish_is_a_compare_and_set_only_one_concurrent_decider_wins(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    plan = start()
    reg.start_rollout(plan)
    assert reg.finish_rollout("fraud", "some-other-plan", "promoted", "stale") is None
    results: list[RolloutPlan | None] = []
    barrier = threading.Barrier(8)

    def decide(i: int) -> None:
        decider = DirectoryRegistry(tmp_path)  # as separate serving processes would
        barrier.wait()
        state = "promoted" if i % 2 else "aborted"
        results.append(decider.finish_rollout("fraud", plan.plan_id, state, f"decider {i}"))

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [r for r in results if r is not None]
    assert len(results) == 8 and len(winners) == 1
    won = winners[0]
    assert reg.rollout("fraud") == won
    assert [p.state for p in reg.rollout_history("fraud")] == ["running", won.state]
    expected_champion = "2" if won.state == "promoted" else "1"
    assert reg.aliases("fraud") == {"champion": expected_champion}
