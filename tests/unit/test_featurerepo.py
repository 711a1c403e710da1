"""Feature repos on disk: init, plan, applied versions, serving's check, CLI errors (no sockets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loopline.cli import main
from loopline.featurerepo.loader import find_repo, load_project, model_of
from loopline.featurerepo.plan import make_plan
from loopline.featurerepo.state import AppliedState


def _init(tmp_path: Path, template: str = "fraud") -> Path:
    repo = tmp_path / "repo"
    assert main(["init", str(repo), "--template", template]) == 0
    return repo


def test_init_scaffolds_a_repo_that_loads(tmp_path: Path) -> None:
    repo = _init(tmp_path)
    assert {p.name for p in repo.iterdir()} >= {"loopline.yaml", "definitions.py"}
    project = load_project(repo)
    assert project.model().name == "fraud"
    assert find_repo(None, env={}, cwd=repo) == repo.resolve()


def test_init_refuses_a_folder_that_is_not_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not empty" in err and "\n" not in err  # one line, no traceback


def _edit(repo: Path, old: str, new: str) -> None:
    path = repo / "definitions.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_plan_shows_new_then_unchanged_then_a_changed_view(tmp_path: Path) -> None:
    repo = _init(tmp_path)
    state = AppliedState(tmp_path / "registry")
    project = load_project(repo)
    first = make_plan(project, {}, None, "p.")
    assert [(c.action, c.version) for c in first.models] == [("new", 1)]
    fs = project.feature_set()
    state.record("fraud", fs.fingerprint, fs.describe(), now_ms=1)
    again = make_plan(project, {"fraud": state.versions("fraud")}, set(), "p.")
    assert [c.action for c in again.models] == ["unchanged"]
    assert again.topics_to_create == ["p.events", "p.outcomes"]
    # A changed computation: a new version, the changed view named.
    _edit(
        repo,
        'Aggregate("txn_count_1h", "count", window="1h"),\n        Aggregate("amount_sum_1h"',
        'Aggregate("txn_count_1h", "count", window="2h"),\n        Aggregate("amount_sum_1h"',
    )
    changed = make_plan(load_project(repo), {"fraud": state.versions("fraud")}, None, "p.")
    (c,) = changed.models
    assert (c.action, c.version, c.views_changed) == ("changed", 2, ["card"])
    assert c.fingerprint != fs.fingerprint
    assert "retrain and promote" in changed.describe()


def test_plan_command_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _init(tmp_path)
    capsys.readouterr()
    assert main(["--repo", str(repo), "plan", "--offline"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"model fraud: feature set v1 \([0-9a-f]{12}\) new", out)


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('"amount_sum_10m", "sum", "amount"', '"amount_sum_10m", "sum", "amt"', "'amt'"),
        ('"merchant_distinct_1h", "distinct"', '"merchant_distinct_1h", "mean"', "numeric"),
        ('Field("amount", "float", ge=0)', 'Field("amount", "string")', "numeric"),
    ],
)
def test_bad_definitions_fail_the_cli_in_one_line_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, words: str
) -> None:
    repo = _init(tmp_path)
    _edit(repo, old, new)
    capsys.readouterr()
    assert main(["plan", "--repo", str(repo), "--offline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("loopline plan: error: definitions.py")
    assert words in err and "\n" not in err


def test_settings_follow_what_the_definitions_declare(tmp_path: Path) -> None:
    from loopline.config.loader import load_settings

    repo = _init(tmp_path)
    _edit(repo, 'gate_metric="auc",', 'gate_metric="auc",\n    params={"num_leaves": 15},')
    _edit(
        repo,
        "drift=Drift(error=True, prediction=True)",
        'drift=Drift(error=False, prediction=True, features=("amount",))',
    )
    s = load_settings(repo=repo, env={})
    assert (model_of(s).name, s.trainer.num_leaves) == ("fraud", 15)
    assert (s.labels.maturity_s, s.labels.timeout_policy) == (86400.0, "negative")
    assert (s.drift.watch_error, s.drift.watch_features) == (False, "amount")
    # A settings file or variable still wins over the definitions.
    s = load_settings(repo=repo, env={"LOOPLINE_TRAINER__NUM_LEAVES": "63"})
    assert s.trainer.num_leaves == 63


def _drift_events(watch_features: str) -> list[str]:
    from loopline.contracts.schemas import PredictionLog
    from loopline.contracts.settings import DriftSettings
    from loopline.streams.drift import DriftMonitor

    s = DriftSettings(watch_features=watch_features, watch_prediction=False)
    monitor = DriftMonitor("m", ("a", "b"), s)
    found = []
    for i in range(6000):
        shifted = i > 3000
        a = 100.0 + i % 7 if shifted else float(i % 7)
        log = PredictionLog(
            f"r{i}", "m", "1", "fs", "fp", {}, [a, 1.0], 0.9 if shifted else 0.1,
            event_time=1 + i, served_at_ms=1 + i,
        )  # fmt: skip
        found += [e.feature for e in monitor.update_prediction(log)]
    return found


def test_drift_watches_only_the_declared_features() -> None:
    assert "a" in _drift_events("a")  # the shift of "a" is seen when watched
    assert _drift_events("b") == []  # "a" and the score moved, neither is watched
