"""The trainer's CLI subcommands, run through argparse as the lead's CLI runs them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic_fraud import as_json_rows, synthetic_history, write_jsonl
from trainer_support import cli_parser, quick_trainer_settings, run_cli

from loopline.config.loader import load_settings
from loopline.contracts.errors import ModelNotFoundError
from loopline.contracts.settings import Settings
from loopline.registry.directory import DirectoryRegistry
from loopline.trainer.commands import register


def serving_run_first(sub: argparse._SubParsersAction) -> None:
    """Another component registered `run` first: the trainer adds to it."""
    run = sub.add_parser("run").add_subparsers(dest="run_command", required=True)
    run.add_parser("serving")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return quick_trainer_settings(load_settings(env={}), tmp_path)


def parser() -> argparse.ArgumentParser:
    return cli_parser(serving_run_first, register)


def run(settings: Settings, *argv: str) -> int:
    return run_cli(settings, argv, serving_run_first, register)


def test_train_models_and_score_from_the_command_line(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    txs, outcomes = synthetic_history(n_cards=300, hours=36, seed=4)
    events = write_jsonl(tmp_path / "events.jsonl", txs)
    labels = write_jsonl(tmp_path / "outcomes.jsonl", outcomes)
    boot = ["--bootstrap-events", str(events), "--bootstrap-outcomes", str(labels)]

    assert run(settings, "train", *boot, "--no-announce", "--window-hours", "36") == 0
    out = capsys.readouterr().out
    for text in (
        "Training summary: fraud v1",
        "data window",
        "class balance",
        "decision",
        "duration",
    ):
        assert text in out
    assert run(settings, "train", *boot, "--no-announce", "--force", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == "2" and report["decision"].startswith(("forced", "accepted"))
    reg = DirectoryRegistry(settings.registry.path)
    assert reg.aliases("fraud") == {"champion": "2"}

    assert run(settings, "models", "list") == 0
    listing = capsys.readouterr().out
    assert "champion" in listing and "fraud: 2 version(s)" in listing
    assert run(settings, "models", "show", "1", "--json") == 0
    shown = capsys.readouterr().out
    assert json.loads(shown)["version"] == "1"
    assert run(settings, "models", "rollback", "--no-announce") == 0
    assert reg.aliases("fraud") == {"champion": "1"}
    assert run(settings, "models", "promote", "2", "--no-announce") == 0
    assert reg.aliases("fraud") == {"champion": "2"}
    assert "v1 -> v2" in capsys.readouterr().out

    events_parquet = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(as_json_rows(txs[:100])), events_parquet)
    assert run(settings, "score", str(events_parquet), str(tmp_path / "scores.parquet")) == 0
    scores = pq.read_table(tmp_path / "scores.parquet")
    assert scores.num_rows == 100 and set(scores["model_version"].to_pylist()) == {"2"}


def test_run_trainer_joins_a_shared_run_group_and_errors_propagate(settings: Settings) -> None:
    args = parser().parse_args(["run", "trainer", "--max-events", "1", "--schedule-s", "60"])
    assert (args.max_events, args.schedule_s) == (1, 60.0)
    assert parser().parse_args(["run", "serving"]).run_command == "serving"
    with pytest.raises(ModelNotFoundError):
        run(settings, "models", "show", "7")
