"""Service settings files are written as TOML that reads back the same."""

from __future__ import annotations

import tomllib
from pathlib import Path

from loopline.config.loader import load_settings
from loopline.demo.config import settings_to_sections, write_toml


def test_written_settings_read_back_the_same_even_with_quotes_and_newlines(tmp_path) -> None:
    odd = 'a "quoted" \\ path\nwith a newline'
    write_toml(
        tmp_path / "x.toml", {"kafka": {"topic_prefix": odd}, "registry": {"path": tmp_path}}
    )
    doc = tomllib.loads((tmp_path / "x.toml").read_text())
    assert doc == {"kafka": {"topic_prefix": odd}, "registry": {"path": str(tmp_path)}}


def test_the_full_settings_round_trip_through_a_file(tmp_path) -> None:
    settings = load_settings(env={"LOOPLINE_REDIS__PORT": "6400"})
    path = tmp_path / "all.toml"
    write_toml(path, settings_to_sections(settings))
    assert load_settings(Path(path), env={}) == settings
