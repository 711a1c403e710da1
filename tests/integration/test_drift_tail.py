"""`loopline drift tail` against the real broker."""

from __future__ import annotations

import argparse
import io
import threading
import time

import pytest
from drift_events import T0, concept_drift
from kafka_support import produce

from loopline.contracts.schemas import DriftEvent, encode
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.streams.drift.commands import register
from loopline.streams.drift.tail import tail

DEADLINE_S = 60.0


def drift_event(i: int, severity: str = "critical") -> DriftEvent:
    return concept_drift(
        i, severity, time_ms=T0 + i * 1000, model_version="2", evidence={"effect_h": 0.52}
    )


def test_from_the_beginning_with_a_severity_floor(
    isolated_settings: Settings, topics: Topics
) -> None:
    events = [drift_event(1), drift_event(2, "info"), drift_event(3, "warning")]
    produce(isolated_settings, topics.drift, [encode(e) for e in events] + [b"garbage"])
    out, err = io.StringIO(), io.StringIO()
    printed = tail(
        isolated_settings.kafka,
        topics.drift,
        out,
        err=err,
        from_beginning=True,
        min_severity="warning",
        timeout_s=8,
    )
    lines = out.getvalue().splitlines()
    assert printed == 2 and len(lines) == 2
    assert "de-1" in lines[0] and "CRITICAL" in lines[0] and "0.100 -> 0.300" in lines[0]
    assert "de-3" in lines[1] and "WARNING" in lines[1]
    assert "malformed drift event" in err.getvalue()


def test_by_default_only_new_events_are_printed_as_they_arrive(
    isolated_settings: Settings, topics: Topics
) -> None:
    produce(isolated_settings, topics.drift, [encode(drift_event(1))])
    out = io.StringIO()
    ready = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            tail(
                isolated_settings.kafka,
                topics.drift,
                out,
                max_events=2,
                timeout_s=DEADLINE_S,
                on_ready=ready.set,
            )
        ),
        daemon=True,
    )
    thread.start()
    assert ready.wait(DEADLINE_S)
    produce(isolated_settings, topics.drift, [encode(drift_event(2))])
    deadline = time.monotonic() + DEADLINE_S
    while "de-2" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "de-2" in out.getvalue()  # arrives while the tail runs
    produce(isolated_settings, topics.drift, [encode(drift_event(3))])
    thread.join(DEADLINE_S)
    assert result == [2]
    lines = out.getvalue().splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["de-2", "de-3"]


def test_the_cli_handler_prints_a_header_and_the_events(
    isolated_settings: Settings, topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(isolated_settings, topics.drift, [encode(drift_event(5))])
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["drift", "tail", "--since-minutes", "5", "--max-events", "1", "--timeout-s", "20"]
    )
    assert args.func(args, isolated_settings) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("time (UTC)")
    assert "de-5" in out.out and topics.drift in out.err
