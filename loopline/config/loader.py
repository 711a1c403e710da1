"""Building the one frozen settings object, once, at the edge (CLI, test fixture).

Nothing in Loopline reads the environment or argv at import time: the CLI
calls :func:`load_settings` and passes the result down. Values come from, in
increasing priority: the defaults (each section in
:mod:`loopline.contracts.settings_sections` and ``settings_loop``), a feature repo's definitions and
``loopline.yaml``, a settings file, and environment variables named
``LOOPLINE_<SECTION>__<KEY>`` (for example
``LOOPLINE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092``).

>>> s = load_settings(env={"LOOPLINE_REDIS__PORT": "6400"})
>>> s.redis.port, s.kafka.bootstrap_servers
(6400, '127.0.0.1:19092')
>>> s.redis.url
'redis://127.0.0.1:6400/0'
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from loopline.contracts.definitions import parse_duration
from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import ENV_PREFIX, Settings


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    repo: Path | None = None,
) -> Settings:
    """Build the settings from defaults, a feature repo, an optional file and ``env``.

    Increasing priority: the defaults below, what the repo's definitions
    declare (its model name), the repo's ``loopline.yaml`` sections, the
    ``path`` file (TOML or YAML), then ``LOOPLINE_<SECTION>__<KEY>`` variables
    of ``env`` (default ``os.environ``; pass an explicit mapping in tests).
    Unknown sections or keys are errors, so a typo never goes unnoticed.
    """
    layers: dict[str, dict[str, Any]] = {}
    if repo is not None:
        from loopline.featurerepo.loader import read_repo_config

        cfg = read_repo_config(repo)
        layers["project"] = {"repo": cfg.root}
        for section, values in cfg.sections.items():
            layers.setdefault(section, {}).update(values)
    if path is not None:
        from loopline.featurerepo.loader import read_config_document

        doc = read_config_document(Path(path))
        for section, values in doc.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            layers.setdefault(section, {}).update(values)
    environ = os.environ if env is None else env
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        layers.setdefault(section, {})[key] = raw
    settings = apply_layers(Settings(), layers)
    if repo is not None:
        settings = _bind_model(settings, layers)
    return settings


def _bind_model(settings: Settings, layers: dict[str, dict[str, Any]]) -> Settings:
    from loopline.featurerepo.loader import project_of

    model = project_of(settings).model(settings.project.model)
    derived: dict[tuple[str, str], Any] = {}
    # What the definitions declare is the default; a settings file or variable still wins.
    outcomes, retrain = model.outcomes, model.retrain
    derived[("labels", "maturity_s")] = float(outcomes.maturity_s)
    derived[("labels", "timeout_policy")] = outcomes.on_timeout
    derived[("policy", "min_new_rows")] = retrain.min_new_rows
    derived[("policy", "min_interval_s")] = float(parse_duration(retrain.min_interval))
    derived[("policy", "schedule_s")] = (
        0.0 if retrain.schedule is None else float(parse_duration(retrain.schedule))
    )
    if not retrain.on_drift:
        derived[("policy", "trigger_kinds")] = ""
    for name, value in model.params.items():
        derived[("trainer", name)] = value
    derived[("drift", "watch_error")] = model.drift.error
    derived[("drift", "watch_prediction")] = model.drift.prediction
    derived[("drift", "watch_features")] = ",".join(model.drift.features or ())
    updates: dict[str, dict[str, Any]] = {}
    for (section, key), value in derived.items():
        if key not in layers.get(section, {}):
            updates.setdefault(section, {})[key] = value
    return apply_layers(settings, updates)


def apply_layers(base: Settings, layers: dict[str, dict[str, Any]]) -> Settings:
    """``base`` with each section's values replaced (strings coerced to the field's type);
    unknown sections or keys are errors naming what is known."""
    sections = {f.name: f for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for section, values in layers.items():
        if section not in sections:
            raise ConfigError(f"unknown settings section {section!r}; known: {sorted(sections)}")
        current = getattr(base, section)
        hints = typing.get_type_hints(type(current))
        known = {f.name for f in fields(current)}
        updates = {}
        for key, raw in values.items():
            if key not in known:
                raise ConfigError(f"unknown setting {section}.{key}; known: {sorted(known)}")
            updates[key] = _coerce(raw, hints[key], f"{section}.{key}")
        changes[section] = replace(current, **updates)
    return replace(base, **changes)


def _coerce(raw: Any, kind: Any, name: str) -> Any:
    if isinstance(kind, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"setting {name}: not a boolean: {raw!r}; use true or false")
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ConfigError(f"setting {name}: not an integer: {raw!r}")
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        if kind is str:
            return str(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"setting {name}: {e}") from e
    raise ConfigError(f"setting {name}: unsupported type {kind}")


def as_dict(settings: Settings) -> dict[str, Any]:
    """Plain-data view (for `loopline status` and logs)."""
    return dataclasses.asdict(settings)
