"""What the trainer's CLI handlers share: settings and console, the registry, the announcer."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from rich.console import Console

from loopline.config.cli import settings_of
from loopline.contracts.errors import ConfigError, ModelNotFoundError
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.registry import backend
from loopline.registry.backend import RegistryBackend, RolloutBackend
from loopline.registry.manifest import ModelVersion

Handler = Callable[..., int]


def handler(fn: Callable[[argparse.Namespace, Settings, Console], int]) -> Handler:
    def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
        settings = settings_of(args, settings)
        return fn(args, settings, Console())

    run.__name__ = fn.__name__
    return run


def open_registry(settings: Settings) -> RegistryBackend:
    """The registry ``registry.backend`` names (signing what is published when
    ``registry.signing_key_file`` is set)."""
    return backend.open_registry(settings.registry)


def open_tracker(settings: Settings) -> Any:
    """The MLflow tracker of ``registry.mlflow_tracking_uri`` (None: unset)."""
    from loopline.registry.mlflow_tracking import MlflowTracker

    return MlflowTracker.from_settings(settings.registry)


def open_rollout_registry(settings: Settings) -> RolloutBackend:
    """The registry, which must hold rollout plans (ConfigError otherwise)."""
    return backend.with_rollouts(open_registry(settings))


def new_announcer(settings: Settings) -> Any:
    from loopline.trainer.kafka_io import KafkaAnnouncer

    return KafkaAnnouncer(
        settings.kafka,
        Topics(settings.kafka.topic_prefix).model_updates,
        settings.trainer.announce_timeout_s,
    )


def parse_time(text: str) -> int:
    """Epoch ms or an ISO-8601 time (UTC unless it says otherwise).

    >>> parse_time("1700000000000"), parse_time("2023-11-14T22:13:20")
    (1700000000000, 1700000000000)
    """
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(f"--until: not epoch ms or an ISO time: {text!r}") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def lookup(reg: RegistryBackend, model: str, version_or_alias: str) -> ModelVersion:
    """A version by number, or the version an alias names."""
    if version_or_alias.isdigit():
        return reg.get(model, version_or_alias)
    mv = reg.resolve(model, version_or_alias)
    if mv is None:
        raise ModelNotFoundError(f"model {model!r} has no version or alias {version_or_alias!r}")
    return mv
