"""Which retrain requests were already handled (idempotency by event id).

A small JSON file rewritten atomically; it keeps the newest ``capacity``
ids, far more than can be in flight on the retrain topic.

>>> import tempfile, pathlib
>>> ledger = RetrainLedger(pathlib.Path(tempfile.mkdtemp()) / "retrain.json")
>>> ledger.seen("r1")
False
>>> ledger.record("r1", "published", version="3")
>>> RetrainLedger(ledger.path).get("r1")["version"]
'3'
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError
from loopline.storage.files import atomic_write


class RetrainLedger:
    def __init__(self, path: Path, capacity: int = 10_000) -> None:
        self.path = Path(path)
        self.capacity = capacity
        self._entries: dict[str, dict[str, Any]] = self._load()

    def seen(self, event_id: str) -> bool:
        return event_id in self._entries

    def get(self, event_id: str) -> dict[str, Any] | None:
        return self._entries.get(event_id)

    def record(self, event_id: str, outcome: str, *, version: str = "", detail: str = "") -> None:
        self._entries[event_id] = {
            "outcome": outcome,
            "version": version,
            "detail": detail,
            "time_ms": int(time.time() * 1000),
        }
        while len(self._entries) > self.capacity:
            self._entries.pop(next(iter(self._entries)))
        self._save()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise ConfigError(f"retrain ledger {self.path} is unreadable: {e}") from e
        return dict(doc.get("handled", {}))

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"handled": self._entries}, indent=1))
