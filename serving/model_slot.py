"""The one reference requests read the model through, swapped atomically.

Readers take ``slot.models()`` once per request and use that model to the
end, so an in-flight request finishes on the session it started with while
the slot already points at a new one. One writer (the model manager) swaps;
the previous model stays loaded for an instant rollback. :class:`ServedModels`
picks, per request, which of the loaded models answers.

>>> slot = ModelSlot()
>>> slot.install("v1"); slot.install("v2")
>>> slot.models()
('v2', 'v1')
>>> slot.rollback(), slot.models()
(True, ('v1', 'v2'))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loopline.contracts.errors import ModelNotFoundError, UnavailableError
from loopline.serving.model import LoadedModel


class ModelSlot:
    """``(current, previous)`` as a single tuple: replacing it is one atomic store."""

    def __init__(self) -> None:
        self._models: tuple[Any, Any] = (None, None)

    def models(self) -> tuple[Any, Any]:
        return self._models

    @property
    def current(self) -> Any:
        return self._models[0]

    @property
    def previous(self) -> Any:
        return self._models[1]

    def install(self, model: Any) -> None:
        """Serve ``model``; the one served until now becomes the previous."""
        self._models = (model, self._models[0])

    def rollback(self) -> bool:
        """Swap current and previous; False when there is no previous."""
        current, previous = self._models
        if previous is None:
            return False
        self._models = (previous, current)
        return True


class ServedModels:
    """Which loaded model answers a request: the slot's two, or the rollout's candidate.

    ``candidate`` returns the running rollout's loaded candidate (None: no
    rollout). While :attr:`draining` (a graceful shutdown) every request is
    refused so callers retry on another instance.
    """

    def __init__(
        self,
        slot: ModelSlot,
        *,
        model_name: str,
        alias: str,
        candidate: Callable[[], LoadedModel | None],
    ) -> None:
        self.slot = slot
        self.model_name = model_name
        self.alias = alias
        self.candidate = candidate
        self.draining = False

    def admit(self) -> None:
        """Refuse a new call while draining (calls admitted before still finish)."""
        if self.draining:
            raise UnavailableError("the server is shutting down; retry on another instance")

    def pick(self, name: str = "", version: str = "", *, admitted: bool = False) -> LoadedModel:
        """The model answering for ``name``/``version`` (empty: the default, current).

        ``admitted``: the call passed :meth:`admit` on arrival (it waited in a
        batch since), so a shutdown begun meanwhile does not refuse it.
        """
        if name and name != self.model_name:
            raise ModelNotFoundError(
                f"unknown model {name!r}; this server serves {self.model_name!r}"
            )
        if not admitted:
            self.admit()
        current, previous = self.slot.models()
        if current is None:
            raise UnavailableError(
                f"no model loaded yet for {self.model_name!r} (following alias {self.alias!r})"
            )
        if not version or version == current.version:
            return current
        if previous is not None and version == previous.version:
            return previous
        candidate = self.candidate()
        if candidate is not None and version == candidate.version:
            return candidate
        loaded = [m.version for m in (current, previous, candidate) if m is not None]
        raise ModelNotFoundError(
            f"model {current.name!r} version {version!r} is not loaded (loaded: {loaded})"
        )

    def live(self) -> list[LoadedModel]:
        """Every model a request may be answered by now (current, previous, candidate)."""
        live = [m for m in self.slot.models() if m is not None]
        candidate = self.candidate()
        if candidate is not None:
            live.append(candidate)
        return live
