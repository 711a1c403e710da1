"""Settings come from defaults, a TOML file and the environment, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError


def test_file_then_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "loopline.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "h:1"\n[serving]\nport = 7000\nthreads = 3\n')
    s = load_settings(cfg, env={"LOOPLINE_SERVING__PORT": "7001", "OTHER": "x"})
    assert s.kafka.bootstrap_servers == "h:1"
    assert (s.serving.port, s.serving.threads) == (7001, 3)


def test_env_is_not_read_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_REDIS__PORT", "1")
    assert load_settings(env={}).redis.port != 1
    assert load_settings().redis.port == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOOPLINE_NOPE__X": "1"}, "unknown settings section 'nope'"),
        ({"LOOPLINE_REDIS__PROT": "1"}, "unknown setting redis.prot"),
        ({"LOOPLINE_REDIS__PORT": "abc"}, "setting redis.port"),
        ({"LOOPLINE_STACK__REDIS_PERSISTENCE": "maybe"}, "not a boolean"),
    ],
)
def test_bad_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, env={})
