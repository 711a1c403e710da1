"""`loopline up --mlflow`: the MLflow server's command, state, port, and its status line."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from loopline.cli import build_parser
from loopline.contracts.settings import Settings
from loopline.stack import process
from loopline.stack.component import ComponentStatus
from loopline.stack.mlflow_server import MlflowServer
from loopline.stack.paths import StackPaths
from loopline.stack.stack import StackStatus


def settings_with_port(port: int) -> Settings:
    s = Settings()
    return dataclasses.replace(s, stack=dataclasses.replace(s.stack, mlflow_port=port))


def test_the_server_keeps_its_state_under_the_stack_state_dir(tmp_path: Path) -> None:
    paths = StackPaths.for_state_dir(tmp_path)
    server = MlflowServer(settings_with_port(15123), paths)
    argv = server.command()
    assert argv[argv.index("--port") + 1] == "15123"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert argv[argv.index("--artifacts-destination") + 1] == f"{tmp_path}/mlflow/artifacts"
    assert server.url == "http://127.0.0.1:15123"


def test_port_zero_picks_a_free_port_then_keeps_the_recorded_one(tmp_path: Path) -> None:
    paths = StackPaths.for_state_dir(tmp_path)
    first = MlflowServer(settings_with_port(0), paths)
    assert first.port > 0
    # What `up` records; a later `status` or `down` finds the same address.
    record = process.ProcessRecord(
        name="mlflow",
        pid=os.getpid(),
        start_time=process.process_start_time(os.getpid()),
        argv=[],
        version="3",
        address="127.0.0.1:15555",
    )
    paths.pids.mkdir(parents=True)
    process.write_record(first.pid_file, record)
    assert MlflowServer(settings_with_port(0), paths).port == 15555


def test_status_shows_the_mlflow_server_when_there_is_one() -> None:
    up = ComponentStatus("kafka", True, "127.0.0.1:19092", "4", False, None, "reused")
    redis = dataclasses.replace(up, name="redis", address="127.0.0.1:16379")
    mlflow = dataclasses.replace(up, name="mlflow", address="127.0.0.1:15000", detail="started")
    without = StackStatus(up, redis, (), (), 0)
    assert "mlflow" not in without.describe()
    line = dataclasses.replace(without, mlflow=mlflow).describe().splitlines()[2]
    assert line.startswith("mlflow") and "127.0.0.1:15000" in line
    assert without.all_up  # MLflow is optional: the stack is up without it


def test_up_takes_mlflow() -> None:
    args = build_parser().parse_args(["up", "--mlflow"])
    assert args.mlflow
