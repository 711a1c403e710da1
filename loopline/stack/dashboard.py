"""The Grafana dashboard's queries, read from ``deploy/grafana/loopline.json``.

What the tests and the rendering tool need of the dashboard without Grafana:
every query with its panel, the query as Prometheus itself can evaluate it
(Grafana's ``$__rate_interval`` replaced by a duration), and the metric names a
query reads (to check them against the catalogue).

>>> sorted(metric_names('sum by (le) (rate(x_bucket{stage="total"}[$__rate_interval]))'))
['x_bucket']
>>> prometheus_expr("rate(x_total[$__rate_interval])", "30s")
'rate(x_total[30s])'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.contracts.errors import ConfigError

# Grafana's interval variables; Prometheus's HTTP API knows none of them.
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")
# Words of PromQL that are not metric names (functions are told by the "(" after them).
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"offset", "bool", "inf", "nan"}
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_OFFSET = re.compile(r"\boffset\s+\d+[smhdwy]", re.IGNORECASE)


@dataclass(frozen=True)
class DashboardQuery:
    """One query of the dashboard: a panel's target or an annotation."""

    panel: str  # the panel's title, or "annotation: <name>"
    ref: str  # the target's refId (the annotation's name)
    expr: str
    legend: str = ""
    unit: str = ""

    @property
    def is_annotation(self) -> bool:
        return self.panel.startswith("annotation: ")


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def queries(dashboard: dict[str, Any]) -> list[DashboardQuery]:
    """Every panel target's query (rows' nested panels too), then every annotation's."""
    out: list[DashboardQuery] = []
    for panel in _panels(dashboard.get("panels", [])):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for target in panel.get("targets", []):
            out.append(
                DashboardQuery(
                    panel["title"],
                    target["refId"],
                    target["expr"],
                    target.get("legendFormat", ""),
                    unit,
                )
            )
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            name = annotation["name"]
            out.append(DashboardQuery(f"annotation: {name}", name, annotation["expr"]))
    return out


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for panel in panels:
        flat.append(panel)
        flat += _panels(panel.get("panels", []))
    return flat


def prometheus_expr(expr: str, interval: str) -> str:
    """``expr`` with Grafana's interval variables replaced by ``interval`` (e.g. "30s")."""
    for variable in GRAFANA_INTERVALS:
        expr = expr.replace(variable, interval)
    if "$" in expr:
        raise ConfigError(
            f"a dashboard variable Prometheus cannot evaluate is left in: {expr}; "
            "use only $__rate_interval / $__interval in deploy/grafana/loopline.json"
        )
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression reads.

    >>> sorted(metric_names("a / on (job) group_left (v) topk by (job) (1, b{x='y'})"))
    ['a', 'b']
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        after = text[match.end() :].lstrip()
        if word.lower() in KEYWORDS or after.startswith("("):
            continue
        names.add(word)
    return names
