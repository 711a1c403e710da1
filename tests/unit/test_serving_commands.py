"""`loopline run serve` is wired into the CLI and maps its flags onto settings."""

from __future__ import annotations

from loopline.cli import build_parser
from loopline.config.loader import load_settings
from loopline.serving import commands


def test_run_serve_parses_with_its_handler_and_flags() -> None:
    args = build_parser().parse_args(
        ["run", "serve", "--port", "0", "--processes", "1", "--alias", "canary"]
    )
    assert args.func is commands.run_serve
    settings = commands.apply_overrides(args, load_settings(env={"LOOPLINE_SERVING__THREADS": "3"}))
    assert settings.serving.port == 0 and settings.serving.processes == 1
    assert settings.serving.alias == "canary"
    assert settings.serving.threads == 3  # the environment still applies
    assert settings.serving.metrics_port == 9464  # untouched without a flag


def test_no_flags_means_the_settings_as_loaded() -> None:
    args = build_parser().parse_args(["run", "serve"])
    base = load_settings(env={})
    assert commands.apply_overrides(args, base) is base
