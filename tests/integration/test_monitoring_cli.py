"""`loopline up --monitoring`, `status` and `down` through the CLI, on the session's
Kafka and Redis (reused, so never stopped) with a private state dir: Prometheus is
started, shown, and stopped; Grafana is shown as not installed where it is not."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import wait_until

from loopline import cli
from loopline.config.loader import load_settings
from loopline.contracts.settings import Settings
from loopline.stack import free_port
from loopline.stack.component import port_open
from loopline.stack.monitoring import Monitoring, grafana_binary


@pytest.fixture
def config(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A settings file as the only source: the session's servers and topics (which
    exist, so `up` creates none), a private state dir."""
    for name in list(os.environ):
        if name.startswith("LOOPLINE_"):
            monkeypatch.delenv(name)
    s = stack_settings
    path = tmp_path / "loopline.toml"
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{s.kafka.bootstrap_servers}"
topic_prefix = "{s.kafka.topic_prefix}"

[redis]
host = "{s.redis.host}"
port = {s.redis.port}

[stack]
state_dir = "{tmp_path / "state"}"
kafka_port = {s.stack.kafka_port}
kafka_controller_port = {s.stack.kafka_controller_port}
prometheus_port = {free_port()}
grafana_port = {free_port()}
scrape_interval_s = 1
"""
    )
    yield path
    # A failed test leaves nothing running: what the state dir started is stopped.
    Monitoring(load_settings(path, env={})).down()


def _run(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str]:
    code = cli.main(["--config", str(config), *argv])
    return code, capsys.readouterr().out


def _jobs(address: str) -> set[str]:
    with urllib.request.urlopen(f"http://{address}/api/v1/targets", timeout=10) as resp:
        return {t["labels"]["job"] for t in json.loads(resp.read())["data"]["activeTargets"]}


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(name))


def test_up_monitoring_then_status_then_down(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(capsys, config, "up", "--monitoring")
    assert code == cli.EXIT_OK, out
    assert "reused" in _line(out, "kafka") and "reused" in _line(out, "redis")
    prometheus = _line(out, "prometheus")
    assert " up " in prometheus and "started (pid" in prometheus, out
    address = prometheus.split()[2]
    wanted = {"loopline-serving", "loopline-features", "loopline-drift", "prometheus"}
    # The scrape targets appear a moment after Prometheus answers.
    wait_until(lambda: wanted <= _jobs(address), timeout_s=30, what=f"{wanted} in {address}")
    if grafana_binary() is None:
        assert "not installed" in _line(out, "grafana")

    code, out = _run(capsys, config, "status")
    assert "started by loopline" in _line(out, "prometheus"), out

    code, out = _run(capsys, config, "down")
    assert code == cli.EXIT_OK
    # Only Prometheus was this state dir's: the reused Kafka and Redis stay up.
    assert out.strip().splitlines() == [f"prometheus: stopped (pid {prometheus.split('pid ')[1]}"]
    assert not port_open("127.0.0.1", int(address.rsplit(":", 1)[1]))
    _, out = _run(capsys, config, "status")
    assert " down " in _line(out, "prometheus") and " up " in _line(out, "kafka")
