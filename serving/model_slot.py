"""The one reference requests read the model through, swapped atomically.

Readers take ``slot.models()`` once per request and use that model to the
end, so an in-flight request finishes on the session it started with while
the slot already points at a new one. One writer (the model manager) swaps;
the previous model stays loaded for an instant rollback.

>>> slot = ModelSlot()
>>> slot.install("v1"); slot.install("v2")
>>> slot.models()
('v2', 'v1')
>>> slot.rollback(), slot.models()
(True, ('v1', 'v2'))
"""

from __future__ import annotations

from typing import Any


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
