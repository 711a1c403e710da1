"""The `loopline` command line: parsing, the subcommand registry, error handling."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loopline import cli
from loopline.contracts.errors import ConfigError, StackError
from loopline.contracts.settings import Settings


def test_stack_subcommands_are_registered() -> None:
    assert {"up", "down", "status"} <= set(cli.COMMANDS)
    args = cli.build_parser().parse_args(["--config", "x.toml", "up", "--fetch-only"])
    assert args.command == "up" and args.fetch_only and args.config == "x.toml"


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([])
    assert done.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="registered twice"):
        cli.command("status", "again")(lambda args, settings: 0)


def test_a_registered_command_runs_with_settings_and_its_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, object] = {}

    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--count", type=int, default=1)

    def run(args: argparse.Namespace, settings: Settings) -> int:
        seen.update(count=args.count, port=settings.redis.port)
        return 7

    monkeypatch.setitem(cli.COMMANDS, "probe", cli.Command("probe", "test", run, arguments))
    config = tmp_path / "c.toml"
    config.write_text("[redis]\nport = 6500\n")
    monkeypatch.delenv("LOOPLINE_REDIS__PORT", raising=False)
    assert cli.main(["--config", str(config), "probe", "--count", "3"]) == 7
    assert seen == {"count": 3, "port": 6500}


def test_loopline_errors_exit_2_with_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        raise StackError("kafka did not answer")

    monkeypatch.setitem(cli.COMMANDS, "boom", cli.Command("boom", "test", run))
    assert cli.main(["boom"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "loopline boom: error: kafka did not answer\n"


def test_a_missing_config_file_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--config", str(tmp_path / "nope.toml"), "status"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("loopline status: error: config file not found")
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_bad_environment_setting_is_a_clean_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOOPLINE_REDIS__PORT", "not-a-port")
    assert cli.main(["status"]) == cli.EXIT_ERROR
    assert "redis.port" in capsys.readouterr().err
