"""One training run: split, train, export, check parity, gate, publish, announce.

Data loading is separate (:mod:`.offline`, :mod:`.bootstrap`), so a run takes
a :class:`TrainingSet` and can be driven by the CLI, the retrain consumer or a
test alike. A :class:`PublishPolicy` says where an accepted challenger goes:
champion at once, or a shadow / canary rollout against the champion. Either
way a rollout still running is ended first (aborted, "superseded by v<N>"):
its comparison no longer holds once a newer version is published.

The task (``Trainer(..., task="regression")``) picks the objective, the
metrics the gate compares and the ONNX output serving reads; the training
set must have been loaded for the same task (float labels for regression).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from loopline.contracts.errors import ConfigError, DeliveryError, FeatureError, ModelError
from loopline.contracts.schemas import ModelUpdate
from loopline.contracts.settings import Settings, TrainerSettings
from loopline.contracts.tasks import check_task
from loopline.featurecore.features import FeatureSet
from loopline.featurerepo.loader import project_of
from loopline.registry.directory import ManifestFields, ModelRegistry, ModelVersion
from loopline.rollout.plan import RolloutPlan
from loopline.trainer import metrics
from loopline.trainer.booster import BoosterParams, train_booster
from loopline.trainer.dataset import Split, TrainingSet, check_enough, split_by_time
from loopline.trainer.evaluation import describe_split, golden_rows, split_rows
from loopline.trainer.export import (
    INPUT_NAME,
    SCORE_OUTPUTS,
    Exporter,
    check_parity,
    native_scores,
    onnx_scores,
    to_onnx,
)
from loopline.trainer.gate import GateDecision, GateMargins, decide
from loopline.trainer.kafka_io import model_update
from loopline.trainer.progress import Progress, SilentProgress
from loopline.trainer.publish_policy import (
    PublishPolicy,
    RolloutRegistry,
    rollout_update,
    share_text,
    start_rollout,
    supersede,
)

CHAMPION = "champion"
__all__ = ["Trainer", "TrainingReport", "golden_rows"]  # golden_rows: moved, still importable


class Announcer(Protocol):
    def announce(self, update: ModelUpdate) -> None: ...


@dataclass(frozen=True)
class ChampionScore:
    version: str
    metrics: dict[str, float] | None  # None: not comparable (reason says why)
    reason: str = ""


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
    ) -> None:
        """``task``: "binary" or "regression"; ``gate_metric``/``min_improvement``:
        a metric of the task the challenger must also improve by that much (see
        :func:`loopline.trainer.gate.decide`); ``fs``: the repo's compiled feature
        set (default: that of the default repo, see :func:`project_of`)."""
        self.settings = settings
        self.task = check_task(task)
        self.gate_metric = gate_metric
        self.min_improvement = min_improvement
        self.registry = registry
        self.announcer = announcer
        self.progress = progress or SilentProgress()
        self.exporter = exporter
        self.publish = publish or PublishPolicy()
        if self.publish.mode != "champion" and not isinstance(registry, RolloutRegistry):
            raise ConfigError(
                f"publish mode {self.publish.mode!r} needs a registry that holds rollout plans"
            )
        if fs is None:
            fs = project_of(Settings()).feature_set()
        self.fs: FeatureSet = fs

    @property
    def model_name(self) -> str:
        return self.fs.name

    def train(
        self, data: TrainingSet, *, force: bool = False, extra: dict[str, Any] | None = None
    ) -> TrainingReport:
        """Run every step; raises before publishing anything when a check fails."""
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
                _margins(s),
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
                self._manifest(
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
                outcome = self._place(mv, force=force)
        return TrainingReport(
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

    def _check_labels(self, data: TrainingSet) -> None:
        """Refuse a training set loaded for the other task (its labels were cast for it)."""
        if len(data) and data.is_regression != (self.task == "regression"):
            loaded = "regression" if data.is_regression else "binary"
            raise ConfigError(
                f"the training set was loaded for a {loaded} task but this trainer trains "
                f"{self.task}; load it with DataRequest(task={self.task!r})"
            )

    # -- where an accepted version goes ----------------------------------------------
    def _place(self, mv: ModelVersion, *, force: bool) -> Published:
        """Make ``mv`` champion, or start its rollout against the champion; announce."""
        version = mv.manifest.version
        current = self.registry.resolve(self.model_name, CHAMPION)
        plan = self.publish.plan_for(
            self.model_name,
            candidate=version,
            champion=current.manifest.version if current else "",
            force=force,
        )
        if plan is None:
            superseded = self._supersede(version)
            self.registry.set_alias(self.model_name, CHAMPION, version)
            self._announce_rollouts(superseded)
            announced = self._announce(mv, "publish")
            note = _superseded_note(superseded)
            return Published("champion", "", tuple(p.plan_id for p in superseded), announced, note)
        superseded = self._start_rollout(plan)
        announced = self._announce_rollouts([*superseded, plan])
        note = (
            f"; published as a {plan.mode} rollout ({share_text(plan)}): plan {plan.plan_id} "
            f"against champion v{plan.champion_version}, which stays" + _superseded_note(superseded)
        )
        self.progress.info(f"rollout {plan.plan_id} started: v{version} in {plan.mode}")
        ended = tuple(p.plan_id for p in superseded)
        return Published(plan.mode, plan.plan_id, ended, announced, note)

    def _rollouts(self) -> RolloutRegistry | None:
        return self.registry if isinstance(self.registry, RolloutRegistry) else None

    def _supersede(self, version: str) -> list[RolloutPlan]:
        reg = self._rollouts()
        return [] if reg is None else supersede(reg, self.model_name, version)

    def _start_rollout(self, plan: RolloutPlan) -> list[RolloutPlan]:
        reg = self._rollouts()
        assert reg is not None  # checked in __init__
        return start_rollout(reg, plan)

    def _announce(self, mv: ModelVersion, action: str) -> bool:
        if self.announcer is None:
            return False
        try:
            self.announcer.announce(model_update(mv, CHAMPION, action))
        except DeliveryError as e:
            v = mv.manifest.version
            raise DeliveryError(
                f"v{v} is champion in the registry, but announcing it failed ({e}); servers "
                f"polling the registry still pick it up; re-announce with "
                f"`loopline models promote {v}`"
            ) from e
        return True

    def _announce_rollouts(self, plans: list[RolloutPlan]) -> bool:
        if self.announcer is None or not plans:
            return False
        champion = self.registry.resolve(self.model_name, CHAMPION)
        if champion is None:
            raise ModelError(f"{self.model_name}: no champion to announce the rollout with")
        for plan in plans:
            try:
                self.announcer.announce(rollout_update(champion, plan))
            except DeliveryError as e:
                raise DeliveryError(
                    f"rollout {plan.plan_id} of v{plan.candidate_version} is {plan.state} in "
                    f"the registry, but announcing it failed ({e}); servers following the "
                    f"registry still pick it up"
                ) from e
        return True

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

    def _manifest(
        self,
        split: Split,
        *,
        challenger: dict[str, float],
        champ: ChampionScore | None,
        decision: GateDecision,
        booster: Any,
        parity: float,
        holdout_scores: np.ndarray,
        extra: dict[str, Any] | None,
    ) -> ManifestFields:
        s = self.settings
        golden = golden_rows(holdout_scores, s.golden_rows)
        window = (split.train.window_ms[0], split.holdout.window_ms[1])
        gate = {
            "checks": [asdict(c) for c in decision.checks],
            "champion_version": champ.version if champ else "",
            "champion_metrics": champ.metrics if champ else None,
            "forced": decision.reason.startswith("forced"),
        }
        return ManifestFields(
            feature_set=self.fs.name,
            fingerprint=self.fs.fingerprint,
            feature_names=list(self.fs.model_features),
            input_name=INPUT_NAME,
            probability_output=SCORE_OUTPUTS[self.task],
            task=self.task,
            training_window_ms=list(window),
            rows=split_rows(split, self.task),
            metrics={
                **challenger,
                "parity_max_abs_diff": parity,
                "best_iteration": float(booster.current_iteration()),
            },
            parent_version=champ.version if champ else "",
            code_version=code_version(),
            golden_inputs=[[float(v) for v in split.holdout.features[i]] for i in golden],
            golden_scores=[float(np.float32(holdout_scores[i])) for i in golden],
            status="candidate" if decision.accepted else "rejected",
            decision=decision.reason,
            extra={
                "source": split.train.source,
                "dropped": dict(split.train.dropped),
                "gate": gate,
                "params": BoosterParams.from_settings(s, self.task).lightgbm(),
                **(extra or {}),
            },
        )


@dataclass(frozen=True)
class Published:
    """Where an accepted version went (nothing, for a rejected one)."""

    published_as: str = ""
    plan_id: str = ""
    superseded: tuple[str, ...] = ()
    announced: bool = False
    note: str = ""


def _superseded_note(plans: list[RolloutPlan]) -> str:
    return "".join(
        f"; rollout {p.plan_id} of v{p.candidate_version} aborted ({p.reason})" for p in plans
    )


def _margins(s: TrainerSettings) -> GateMargins:
    return GateMargins(
        auc=s.gate_auc_margin,
        log_loss=s.gate_log_loss_margin,
        brier=s.gate_brier_margin,
        rmse=s.gate_rmse_margin,
        mae=s.gate_mae_margin,
    )


def code_version() -> str:
    """The installed loopline version, plus the git commit when run from a checkout."""
    try:
        version = importlib.metadata.version("loopline")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}" if sha else version
