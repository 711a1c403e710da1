"""One training run: split, train, export, check parity, gate, publish, announce.

Data loading is separate (:mod:`.offline`, :mod:`.bootstrap`), so a run takes
a :class:`TrainingSet` and can be driven by the CLI, the retrain consumer or a
test alike. Where an accepted challenger goes (champion, or a shadow / canary
rollout) and its announcement are :mod:`.placement`'s; what its manifest
records is :mod:`.manifest`'s.

The task (``Trainer(..., task="regression")``) picks the objective, the
metrics the gate compares and the ONNX output serving reads; the training
set must have been loaded for the same task (float labels for regression).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from loopline.contracts.errors import ConfigError, FeatureError, ModelError
from loopline.contracts.settings import Settings, TrainerSettings
from loopline.contracts.tasks import check_task
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import project_of
from loopline.registry.manifest import ModelRegistry
from loopline.trainer import metrics
from loopline.trainer.booster import BoosterParams, train_booster
from loopline.trainer.dataset import TrainingSet, check_enough, split_by_time
from loopline.trainer.evaluation import describe_split, split_rows
from loopline.trainer.export import Exporter, check_parity, native_scores, onnx_scores, to_onnx
from loopline.trainer.gate import ChampionScore, GateMargins, decide
from loopline.trainer.manifest import manifest_fields
from loopline.trainer.placement import CHAMPION, Placement, Published
from loopline.trainer.progress import Progress, SilentProgress
from loopline.trainer.publish_policy import Announcer, PublishPolicy, RolloutRegistry
from loopline.trainer.tracking import run_record

if TYPE_CHECKING:
    from loopline.registry.mlflow_tracking import MlflowTracker


@dataclass(frozen=True)
class TrainingReport:
    """What a run did, for the summary, the retrain ledger and tests."""

    model_name: str
    version: str
    accepted: bool
    decision: str
    source: str
    window_ms: tuple[int, int]
    rows: dict[str, int]
    dropped: dict[str, int]
    metrics: dict[str, float]
    champion_version: str
    champion_metrics: dict[str, float] | None
    best_iteration: int
    parity_max_abs_diff: float
    announced: bool
    duration_s: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Where an accepted version went: "champion", or "shadow" / "canary" (a rollout
    # plan against the champion, which stays). Empty when rejected.
    published_as: str = ""
    rollout_plan_id: str = ""
    # Rollout plans this run ended because the new version superseded them.
    superseded_plan_ids: tuple[str, ...] = ()
    task: str = "binary"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Trainer:
    """Trains a challenger and lets the gate decide whether it becomes champion."""

    def __init__(
        self,
        settings: TrainerSettings,
        registry: ModelRegistry,
        *,
        announcer: Announcer | None = None,
        progress: Progress | None = None,
        exporter: Exporter = to_onnx,
        publish: PublishPolicy | None = None,
        task: str = "binary",
        gate_metric: str | None = None,
        min_improvement: float = 0.0,
        fs: FeatureSet | None = None,
        tracker: MlflowTracker | None = None,
    ) -> None:
        """``task``: "binary" or "regression"; ``gate_metric``/``min_improvement``:
        a metric of the task the challenger must also improve by that much (see
        :func:`loopline.trainer.gate.decide`); ``fs``: the repo's compiled feature
        set (default: that of the default repo, see :func:`project_of`); ``tracker``:
        where each run is logged (MLflow, :mod:`loopline.registry.mlflow_tracking`)."""
        self.settings = settings
        self.task = check_task(task)
        self.gate_metric = gate_metric
        self.min_improvement = min_improvement
        self.registry = registry
        self.tracker = tracker
        self.progress = progress or SilentProgress()
        self.exporter = exporter
        publish = publish or PublishPolicy()
        if publish.mode != "champion" and not isinstance(registry, RolloutRegistry):
            raise ConfigError(
                f"publish mode {publish.mode!r} needs a registry that holds rollout plans"
            )
        if fs is None:
            fs = project_of(Settings()).feature_set()
        self.fs: FeatureSet = fs
        self.placement = Placement(registry, fs.name, publish, announcer, self.progress)

    @property
    def model_name(self) -> str:
        return self.fs.name

    def train(
        self, data: TrainingSet, *, force: bool = False, extra: dict[str, Any] | None = None
    ) -> TrainingReport:
        """Run every step; raises before publishing anything when a check fails.

        With a tracker, the run is logged as a tracking run (ended FAILED on an error).
        """
        if self.tracker is None:
            return self._train(data, force, extra)[0]
        run = self.tracker.start(self.model_name, extra)
        lineage = run.lineage(extra)
        try:
            report, onnx, params = self._train(data, force, lineage)
        except BaseException as e:
            run.fail(e)
            raise
        margins = GateMargins.from_settings(self.settings)
        run.finish(**run_record(report, lineage, params, margins, self.fs), onnx=onnx)
        return report

    def _train(
        self, data: TrainingSet, force: bool, extra: dict[str, Any] | None
    ) -> tuple[TrainingReport, bytes, BoosterParams]:
        s = self.settings
        started = time.monotonic()
        stages: dict[str, float] = {}

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            self.progress.stage(name)
            t0 = time.monotonic()
            yield
            stages[name] = round(time.monotonic() - t0, 3)

        if tuple(data.feature_names) != tuple(self.fs.model_features):
            raise FeatureError(
                f"training rows have features {list(data.feature_names)[:3]}..., "
                f"not feature set {self.fs.name}'s model_features"
            )
        self._check_labels(data)
        task = self.task
        with stage("split"):
            split = split_by_time(data, s.validation_fraction, s.holdout_fraction)
            check_enough(split, s.min_rows, s.min_positives, task)
            self.progress.info(describe_split(split, task))
        with stage("train"):
            params = BoosterParams.from_settings(s, task)
            booster = train_booster(split.train, split.valid, params, self.progress.iteration)
            self.progress.info(f"best iteration {booster.current_iteration()}")
        with stage("export"):
            onnx = self.exporter(booster, self.fs)
        with stage("parity"):
            native = native_scores(booster, split.holdout.features)
            scores = onnx_scores(onnx, split.holdout.features, task)
            relative = task == "regression"
            diff = check_parity(native, scores, s.parity_tolerance, relative=relative)
            kind = "relative" if relative else "abs"
            self.progress.info(f"ONNX vs native max {kind} diff {diff:.2e} on {len(native)} rows")
        with stage("gate"):
            challenger = metrics.evaluate_task(task, split.holdout.labels, scores)
            champ = self._score_champion(split.holdout)
            decision = decide(
                challenger,
                champ.metrics if champ else None,
                GateMargins.from_settings(s),
                force=force,
                no_champion_reason=(champ.reason if champ else "") or "no champion yet",
                task=task,
                gate_metric=self.gate_metric,
                min_improvement=self.min_improvement,
            )
            self.progress.info(decision.reason)
        with stage("publish"):
            mv = self.registry.publish(
                self.model_name,
                onnx,
                manifest_fields(
                    self.fs,
                    s,
                    task,
                    split,
                    challenger=challenger,
                    champ=champ,
                    decision=decision,
                    booster=booster,
                    parity=diff,
                    holdout_scores=scores,
                    extra=extra,
                ),
            )
            outcome = Published()
            if decision.accepted:
                outcome = self.placement.place(mv, force=force)
        report = TrainingReport(
            model_name=self.model_name,
            version=mv.manifest.version,
            accepted=decision.accepted,
            decision=decision.reason + outcome.note,
            source=data.source,
            window_ms=data.window_ms,
            rows=split_rows(split, task),
            dropped=dict(data.dropped),
            metrics=challenger,
            champion_version=champ.version if champ else "",
            champion_metrics=champ.metrics if champ else None,
            best_iteration=booster.current_iteration(),
            parity_max_abs_diff=diff,
            announced=outcome.announced,
            duration_s=round(time.monotonic() - started, 3),
            stage_seconds=stages,
            published_as=outcome.published_as,
            rollout_plan_id=outcome.plan_id,
            superseded_plan_ids=outcome.superseded,
            task=task,
        )
        return report, onnx, params

    def _check_labels(self, data: TrainingSet) -> None:
        """Refuse a training set loaded for the other task (its labels were cast for it)."""
        if len(data) and data.is_regression != (self.task == "regression"):
            loaded = "regression" if data.is_regression else "binary"
            raise ConfigError(
                f"the training set was loaded for a {loaded} task but this trainer trains "
                f"{self.task}; load it with DataRequest(task={self.task!r})"
            )

    def _score_champion(self, holdout: TrainingSet) -> ChampionScore | None:
        """The champion's metrics on the challenger's holdout, when it can score those rows."""
        current = self.registry.resolve(self.model_name, CHAMPION)
        if current is None:
            return None
        m = current.manifest
        if m.fingerprint != self.fs.fingerprint or list(m.feature_names) != list(
            self.fs.model_features
        ):
            return ChampionScore(m.version, None, f"champion v{m.version} uses another feature set")
        if m.task != self.task:
            return ChampionScore(m.version, None, f"champion v{m.version} is a {m.task} model")
        try:
            scores = onnx_scores(current.read_verified(), holdout.features, self.task)
        except ModelError as e:
            return ChampionScore(m.version, None, f"champion v{m.version} is unusable ({e})")
        return ChampionScore(m.version, metrics.evaluate_task(self.task, holdout.labels, scores))
