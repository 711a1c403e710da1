"""One exported Prometheus metric: its name, type, labels and owner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One exported metric: its client-side name, type, labels and owner."""

    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    labels: tuple[str, ...]
    help: str
    component: str  # "serving" | "streams" | "trainer" | "policy"

    @property
    def series(self) -> str:
        """The name a PromQL query uses (``_bucket`` for a histogram's quantiles)."""
        if self.kind == "counter":
            return self.name + "_total"
        if self.kind == "histogram":
            return self.name + "_bucket"
        return self.name

    def exposed(self) -> tuple[str, ...]:
        """Every series name the client exposes for this metric."""
        if self.kind == "counter":
            return (self.name + "_total", self.name + "_created")
        if self.kind == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        return (self.name,)


def declare(name: str, kind: str, labels: tuple[str, ...], help: str, component: str) -> Metric:
    """A catalogue entry (positional, so each entry reads as one compact record)."""
    return Metric(name, kind, labels, help, component)
