"""Models for the serving benchmarks, trained as ``loopline train --bootstrap-events`` trains.

The repo's simulator (the fraud example's, by default) writes a few hours of
history as JSONL files of events and outcomes; the trainer's bootstrap replays
them through the shared feature code, trains LightGBM, exports ONNX, checks
parity and publishes into a scratch registry. Benchmarks then publish copies of
those versions into the registry the server reads: a hot swap publishes in
milliseconds, with no training on the clock.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import builtin_example, project_of, read_repo_config
from loopline.registry.directory import DirectoryRegistry, ManifestFields, ModelVersion
from loopline.registry.manifest import model_update
from loopline.simulation.api import SimulationConfig, load_simulation
from loopline.simulation.timeline import Routes
from loopline.trainer.kafka_io import KafkaAnnouncer

N_TREES, N_LEAVES = 200, 31
# A slow learning rate keeps the validation loss improving for all N_TREES rounds,
# so early stopping keeps every tree: the model size the benchmarks state.
LEARNING_RATE = 0.01
BOOSTER = {
    "num_trees": N_TREES,
    "num_leaves": N_LEAVES,
    "learning_rate": LEARNING_RATE,
    "early_stopping_rounds": N_TREES,
}
# Six hours at 2 transactions/s (about 24,000 rows), 5 % fraud: enough rows and
# positives for 31-leaf trees.
HISTORY_S, HISTORY_RATE, FRAUD_RATE = 6 * 3600.0, 2.0, 0.05


class TrainedModels:
    """Versions trained once per seed (another seed: another history, another model).

    ``cache``: a folder kept between runs, so a repeated run trains nothing
    (the versions trained there, by seed, in ``seeds.json``).
    """

    def __init__(self, settings: Settings, work: Path, cache: Path | None = None) -> None:
        self.settings = settings
        self.work = cache if cache is not None else work / "trained"
        self.scratch = DirectoryRegistry(self.work / "registry")
        self._seeds = self.work / "seeds.json"
        self._by_seed: dict[int, ModelVersion] = {}
        if cache is not None and self._seeds.exists():
            for seed, (name, version) in json.loads(self._seeds.read_text()).items():
                self._by_seed[int(seed)] = self.scratch.get(name, version)

    def trained(self, seed: int) -> ModelVersion:
        """The version trained on seed ``seed``'s history (trained on first use)."""
        if seed not in self._by_seed:
            self._by_seed[seed] = self._train(seed)
            versions = {
                s: (mv.manifest.model_name, mv.manifest.version) for s, mv in self._by_seed.items()
            }
            self._seeds.write_text(json.dumps(versions))
        return self._by_seed[seed]

    def adopt(self, seed: int, version: ModelVersion) -> None:
        """Use ``version`` (trained earlier, e.g. by another run) as seed ``seed``'s model."""
        self._by_seed[seed] = version

    def publish(
        self, registry: DirectoryRegistry, seed: int, *, alias: str | None = "champion"
    ) -> ModelVersion:
        """A new version in ``registry`` holding seed ``seed``'s model; ``alias`` points at it."""
        source = self.trained(seed)
        m = source.manifest
        fields = ManifestFields(
            **{f.name: getattr(m, f.name) for f in dataclasses.fields(ManifestFields)}
        )
        mv = registry.publish(m.model_name, source.read_verified(), fields)
        if alias:
            registry.set_alias(m.model_name, alias, mv.manifest.version)
        return mv

    def _train(self, seed: int) -> ModelVersion:
        # Imported here, not at the top: load-generator processes re-import the
        # benchmark script (spawn), and LightGBM and ONNX would delay their start.
        from loopline.trainer.data import DataRequest, load_training_set
        from loopline.trainer.pipeline import Trainer

        events, outcomes = self.history(seed)
        trainer = dataclasses.replace(self.settings.trainer, **BOOSTER, seed=seed)
        settings = dataclasses.replace(self.settings, trainer=trainer)
        data = load_training_set(
            settings, DataRequest(bootstrap_events=str(events), bootstrap_outcomes=str(outcomes))
        )
        project = project_of(settings)
        report = Trainer(
            settings.trainer, self.scratch, fs=project.feature_set(settings.project.model)
        ).train(data, force=True, extra={"trigger": "benchmark"})
        if report.best_iteration != N_TREES:
            raise SystemExit(
                f"seed {seed}: early stopping kept {report.best_iteration} of {N_TREES} trees; "
                "lower LEARNING_RATE in benchmarks/support/models.py"
            )
        return self.scratch.get(report.model_name, report.version)

    def history(self, seed: int) -> tuple[Path, Path]:
        """The simulator's events and their outcomes as JSONL files (what the CLI reads)."""
        root = self.settings.project.repo or builtin_example()
        assert root is not None, "no feature repo: set project.repo"
        project = project_of(self.settings)
        routes = Routes.of(
            project,
            project.model(self.settings.project.model),
            Topics(self.settings.kafka.topic_prefix),
        )
        simulation = load_simulation(Path(root), read_repo_config(Path(root)).simulator)
        self.work.mkdir(parents=True, exist_ok=True)
        events, outcomes = self.work / f"events-{seed}.jsonl", self.work / f"outcomes-{seed}.jsonl"
        with events.open("w") as ev_file, outcomes.open("w") as out_file:
            config = SimulationConfig(
                seed=seed,
                duration_s=HISTORY_S,
                rate=HISTORY_RATE,
                params={"fraud_rate": FRAUD_RATE},
            )
            for ev in simulation.simulate(config):
                ev_file.write(json.dumps(ev.record) + "\n")
                if ev.scored:
                    out_file.write(json.dumps(routes.outcome_record(ev)) + "\n")
        return events, outcomes


def champion_announcer(settings: Settings) -> KafkaAnnouncer:
    """Announces versions on the run's model-updates topic, as the trainer does."""
    return KafkaAnnouncer(settings.kafka, Topics(settings.kafka.topic_prefix).model_updates)


def announce_champion(announcer: KafkaAnnouncer, mv: ModelVersion) -> None:
    announcer.announce(model_update(mv, "champion", "publish"))
