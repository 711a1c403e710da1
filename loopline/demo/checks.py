"""The demo report's verdicts: one check per promise of the loop, and the report they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    text: str
    loop_closed: bool
    checks: list[Check] = field(default_factory=list)
    html_path: Path | None = None
    figures: dict[str, Any] = field(default_factory=dict)
