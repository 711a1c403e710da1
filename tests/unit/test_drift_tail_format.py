"""The lines `loopline drift tail` prints, and its argument parsing."""

from __future__ import annotations

import argparse

import pytest

from loopline.contracts.schemas import DriftEvent
from loopline.streams.drift.commands import register, run_tail
from loopline.streams.drift.tail import HEADER, format_event


def event(**changes: object) -> DriftEvent:
    values: dict = {
        "id": "de-abc",
        "time_ms": 1_700_000_000_000,
        "kind": "data",
        "detector": "adwin-band(q0.1,q0.9)",
        "feature": "card.amount_sum_1h",
        "statistic_before": 0.2,
        "statistic_after": 0.47,
        "window_before": 5200,
        "window_after": 300,
        "model_version": "7",
        "severity": "warning",
        "evidence": {"effect_h": 0.571},
    }
    return DriftEvent(**{**values, **changes})


def test_a_line_says_when_how_bad_what_and_how_much() -> None:
    line = format_event(event())
    assert line.startswith("2023-11-14 22:13:20Z  WARNING ")
    for part in (
        "data",
        "card.amount_sum_1h",
        "0.200 -> 0.470",
        "model 7",
        "h=0.57",
        "windows 5200/300",
        "de-abc",
    ):
        assert part in line, part
    assert "\n" not in line


def test_columns_line_up_whatever_the_kind() -> None:
    a = format_event(event())
    b = format_event(event(kind="concept", feature="error", severity="critical"))
    assert a.index(" -> ") == b.index(" -> ")
    assert HEADER.index("severity") == a.index("WARNING")


def test_evidence_is_optional() -> None:
    line = format_event(event(evidence={}))
    assert "h=" not in line and "windows 5200/300" in line
    perf = format_event(
        event(kind="performance", feature="auc", detector="rolling-auc", evidence={})
    )
    assert "floor" not in perf and "window 300" in perf


def test_register_adds_drift_tail_with_its_options() -> None:
    parser = argparse.ArgumentParser(prog="loopline")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["drift", "tail", "--since-minutes", "15", "--min-severity", "warning", "--max-events", "3"]
    )
    assert args.func is run_tail
    assert (args.since_minutes, args.min_severity, args.max_events) == (15.0, "warning", 3)
    assert not args.from_beginning
    with pytest.raises(SystemExit):
        parser.parse_args(["drift", "tail", "--from-beginning", "--since-minutes", "5"])


def test_register_adds_run_drift_next_to_other_run_services() -> None:
    from loopline.streams.drift.commands import run_drift_flow

    parser = argparse.ArgumentParser(prog="loopline")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run").add_subparsers(dest="run_command")
    run.add_parser("trainer")  # another component's service
    register(sub)
    args = parser.parse_args(["run", "drift", "--drain-idle-s", "2", "--no-recovery"])
    assert args.func is run_drift_flow and args.drain == 2.0 and args.no_recovery
    assert parser.parse_args(["run", "trainer"]).run_command == "trainer"
