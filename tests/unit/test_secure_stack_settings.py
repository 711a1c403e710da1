"""`loopline up --secure` settings: each service its own principal, paths only, never secrets."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest

from loopline.config.loader import load_settings
from loopline.contracts.errors import ConfigError
from loopline.stack.secure import material_of, secure_settings, write_service_configs
from loopline.stack.secure_material import SERVICES


@pytest.fixture
def base(tmp_path: Path):
    s = load_settings(env={})
    return replace(s, stack=replace(s.stack, state_dir=tmp_path / "state"))


def test_the_stack_itself_runs_as_admin_on_sasl_ssl_and_tls(base) -> None:
    s = secure_settings(base)
    assert (s.kafka.security_protocol, s.kafka.sasl_username) == ("SASL_SSL", "admin")
    assert (s.redis.tls, s.redis.username, s.stack.secure) == (True, "admin", True)
    assert s.registry.signing_key_file is not None and s.registry.signing_key_file.is_file()


@pytest.mark.parametrize("service", ["features", "serve", "trainer", "producer"])
def test_each_service_file_loads_as_that_principal_and_holds_no_secret(base, service) -> None:
    s = secure_settings(base)
    material = material_of(s)
    folder = write_service_configs(s, material)
    path = folder / f"{service}.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_settings(path, env={})
    assert (loaded.kafka.sasl_username, loaded.redis.username) == (service, service)
    assert loaded.kafka.sasl_password_file == material.password_file(service)
    assert loaded.kafka.bootstrap_servers == base.kafka.bootstrap_servers
    text = path.read_text()
    assert all(material.password(p) not in text for p in SERVICES)


def test_material_is_made_once_and_reused(base) -> None:
    first = material_of(secure_settings(base))
    again = material_of(secure_settings(base))
    assert first.password("serve") == again.password("serve")
    assert stat.S_IMODE(first.password_file("serve").stat().st_mode) == 0o600


def test_an_unknown_principal_is_a_clear_error(base) -> None:
    with pytest.raises(ConfigError, match="unknown service principal 'billing'"):
        material_of(secure_settings(base)).password_file("billing")


def test_sasl_without_a_login_names_the_settings_to_set() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.sasl_username and kafka\.sasl_password_file"):
        load_settings(env={"LOOPLINE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"})
