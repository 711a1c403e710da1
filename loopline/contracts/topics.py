"""Loopline's Kafka topics: names and how each is kept.

>>> t = Topics(prefix="loopline.")
>>> t.events, t.model_updates
('loopline.events', 'loopline.model-updates')
>>> [s.name for s in t.specs()][:3]
['loopline.events', 'loopline.outcomes', 'loopline.predictions']
"""

from __future__ import annotations

from dataclasses import dataclass

from loopline.contracts.settings import TopicSettings


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the broker should hold it."""

    name: str
    partitions: int
    config: dict[str, str]


@dataclass(frozen=True)
class Topics:
    """Every topic name, derived from one prefix (tests use a unique prefix)."""

    prefix: str = "loopline."

    def named(self, topic: str) -> str:
        """A feature repo's topic (an event source's or its outcomes') under the prefix."""
        return self.prefix + topic

    @property
    def events(self) -> str:
        """Raw business events (card transactions), JSON, keyed by entity."""
        return self.prefix + "events"

    @property
    def outcomes(self) -> str:
        """Delayed outcomes (labels) for earlier events."""
        return self.prefix + "outcomes"

    @property
    def predictions(self) -> str:
        """Every prediction served: features used, score, model version."""
        return self.prefix + "predictions"

    @property
    def labeled(self) -> str:
        """Predictions joined with their outcomes."""
        return self.prefix + "labeled"

    @property
    def drift(self) -> str:
        """Confirmed drift alarms."""
        return self.prefix + "drift"

    @property
    def retrain(self) -> str:
        """Requests to train a new model."""
        return self.prefix + "retrain"

    @property
    def model_updates(self) -> str:
        """Published model versions and alias moves (compacted)."""
        return self.prefix + "model-updates"

    @property
    def dead_letters(self) -> str:
        """Input that could not be processed, with the original bytes and the reason."""
        return self.prefix + "dead-letters"

    def all(self) -> list[str]:
        return [s.name for s in self.specs()]

    def specs(
        self, settings: TopicSettings | None = None, repo_topics: tuple[str, ...] = ()
    ) -> list[TopicSpec]:
        """The topics with partition counts, retention and compaction.

        ``repo_topics`` adds a feature repo's event and outcome topics (unprefixed).
        """
        s = settings or TopicSettings()
        keep = {"retention.ms": str(s.retention_ms)}
        data = [self.events, self.outcomes, self.predictions, self.labeled]
        data += [n for n in map(self.named, repo_topics) if n not in data]
        specs = [TopicSpec(name, s.partitions, dict(keep)) for name in data]
        specs += [
            TopicSpec(self.drift, 1, dict(keep)),
            TopicSpec(self.retrain, 1, dict(keep)),
            # Compacted: a restarted server reads the latest state of each model alias.
            TopicSpec(self.model_updates, 1, {"cleanup.policy": "compact"}),
            TopicSpec(self.dead_letters, 1, {"retention.ms": str(s.dead_letter_retention_ms)}),
        ]
        return specs
