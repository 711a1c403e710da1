"""The registry backend: what every registry offers, and the one ``registry.backend`` selects.

Three backends implement :class:`RegistryBackend`:

* ``directory`` (the default, embedded): a local or mounted directory,
  :class:`~loopline.registry.directory.DirectoryRegistry`;
* ``fsspec``: a store many hosts share (S3, a shared filesystem) with
  atomic-by-convention writes, :class:`~loopline.registry.shared.SharedRegistry`;
* ``mlflow``: the MLflow Model Registry,
  :class:`~loopline.registry.mlflow_registry.MlflowRegistry`.

The hot path is serving's poll for an alias change: every backend answers
:meth:`RegistryBackend.aliases` with one small read (one file, one object,
one REST call), and serving reads a version's manifest and model only when
the alias names another version than the one it serves.

>>> from loopline.contracts.settings import RegistrySettings
>>> import tempfile
>>> reg = open_registry(RegistrySettings(path=tempfile.mkdtemp()))
>>> type(reg).__name__, isinstance(reg, RegistryBackend)
('DirectoryRegistry', True)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import RegistrySettings
from loopline.registry.manifest import ModelRegistry
from loopline.registry.signatures import ModelKey
from loopline.rollout.plan import RolloutPlan


@runtime_checkable
class RegistryBackend(ModelRegistry, Protocol):
    """What the trainer, serving and the CLI ask of any registry.

    ``aliases`` is the hot path (serving polls it): one cheap read. Rollout
    plans (``rollout``, ``finish_rollout``) are part of it; a backend without
    them answers None. Starting a rollout (``start_rollout``) is an extra some
    backends have (see ``loopline.trainer.publish_policy.RolloutRegistry``).
    """

    def where(self) -> str:
        """Where the registry lives, for messages (a path or a URL)."""
        ...

    def remove_alias(self, model: str, alias: str) -> None: ...


@runtime_checkable
class RolloutBackend(RegistryBackend, Protocol):
    """A registry that also starts rollout plans (directory, fsspec)."""

    def start_rollout(self, plan: RolloutPlan) -> None: ...
    def set_rollout(self, plan: RolloutPlan) -> None: ...
    def rollout_history(self, model: str) -> list[RolloutPlan]: ...


def with_rollouts(registry: RegistryBackend) -> RolloutBackend:
    """``registry``, when it holds rollout plans; else a ConfigError saying what to change."""
    if not isinstance(registry, RolloutBackend):
        raise ConfigError(
            f"the registry at {registry.where()} holds no rollout plans (shadow, canary); "
            "use registry.backend directory or fsspec for rollouts"
        )
    return registry


def open_registry(settings: RegistrySettings) -> RegistryBackend:
    """The registry ``settings`` describe, with its signing key when one is set."""
    if settings.backend == "directory":
        from loopline.registry import directory

        return directory.open_registry(settings)
    key = ModelKey.from_settings(settings)
    if settings.backend == "fsspec":
        from loopline.registry.shared import SharedRegistry

        return SharedRegistry.from_settings(settings, signing_key=key)
    from loopline.registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry.from_settings(settings, signing_key=key)
