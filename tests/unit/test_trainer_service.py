"""Retrain events are handled once per id, failures are recorded, never retried forever."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from synthetic_fraud import synthetic_history
from trainer_support import training_set_of

from loopline.contracts.schemas import RetrainEvent
from loopline.contracts.settings import Settings, TrainerSettings
from loopline.registry.directory import DirectoryRegistry, ManifestFields
from loopline.trainer.dataset import TrainingSet
from loopline.trainer.ledger import RetrainLedger
from loopline.trainer.pipeline import Trainer
from loopline.trainer.service import RetrainService

TRAINER = TrainerSettings(
    num_trees=40, early_stopping_rounds=10, num_threads=1, min_rows=200, min_positives=10
)


@pytest.fixture(scope="module")
def data() -> TrainingSet:
    txs, outcomes = synthetic_history(n_cards=250, hours=36, seed=8)
    return training_set_of(txs, outcomes, window_hours=36)


def service(tmp_path: Path, data: TrainingSet, loads: list[int]) -> RetrainService:
    settings = dataclasses.replace(
        Settings(), trainer=dataclasses.replace(TRAINER, state_dir=tmp_path / "state")
    )
    reg = DirectoryRegistry(tmp_path / "registry")

    def load() -> TrainingSet:
        loads.append(1)
        return data

    return RetrainService(settings, reg, Trainer(settings.trainer, reg), load)


def event(eid: str, **kw: object) -> RetrainEvent:
    return RetrainEvent(id=eid, time_ms=1, trigger="drift", reason="test", **kw)  # type: ignore[arg-type]


def test_each_event_id_trains_once_even_if_the_ledger_is_lost(
    tmp_path: Path, data: TrainingSet
) -> None:
    loads: list[int] = []
    svc = service(tmp_path, data, loads)
    first = svc.handle(event("r1", drift_event_ids=["d1"]))
    assert (first.outcome, first.version) == ("published", "1")
    assert svc.handle(event("r1")).outcome == "duplicate"
    m = svc.registry.get("fraud", "1").manifest
    assert (m.extra["retrain_event_id"], m.extra["drift_event_ids"]) == ("r1", ["d1"])

    # A crash after publishing but before the ledger was written: the manifest remembers.
    (tmp_path / "state" / "retrain-ledger.json").unlink()
    fresh = service(tmp_path, data, loads)
    again = fresh.handle(event("r1"))
    assert (again.outcome, again.version) == ("duplicate", "1")
    assert len(loads) == 1
    assert fresh.handle(event("r2")).outcome in {"published", "rejected"}
    assert len(loads) == 2
    assert RetrainLedger(tmp_path / "state" / "retrain-ledger.json").get("r2") is not None


def test_a_failed_training_is_recorded_and_not_repeated(tmp_path: Path, data: TrainingSet) -> None:
    loads: list[int] = []
    svc = service(tmp_path, data.rows(0, 50), loads)
    failed = svc.handle(event("r9"))
    assert failed.outcome == "failed" and "InsufficientDataError" in failed.detail
    assert svc.handle(event("r9")).outcome == "duplicate"
    assert len(loads) == 1 and svc.registry.versions("fraud") == []


def republished(reg: DirectoryRegistry, version: str, **changes: object) -> str:
    """Publish a copy of ``version`` with ``changes``, as a trainer killed before placing it
    leaves it: in the registry, aliases untouched. Returns the new version."""
    mv = reg.get("fraud", version)
    names = {f.name for f in dataclasses.fields(ManifestFields)}
    fields = {k: v for k, v in dataclasses.asdict(mv.manifest).items() if k in names}
    fields.update(changes)
    copy = ManifestFields(**fields)  # type: ignore[arg-type]
    return reg.publish("fraud", mv.model_path.read_bytes(), copy).manifest.version


def test_a_crash_between_publish_and_placement_is_finished_by_the_redelivery(
    tmp_path: Path, data: TrainingSet
) -> None:
    loads: list[int] = []
    svc = service(tmp_path, data, loads)
    svc.handle(event("r1"))
    reg = svc.registry
    stranded = republished(reg, "1", extra={"retrain_event_id": "r2"})
    assert reg.aliases("fraud")["champion"] == "1"

    again = service(tmp_path, data, loads).handle(event("r2"))
    assert (again.outcome, again.version) == ("published", stranded)
    assert "placed now as champion" in again.detail
    assert reg.aliases("fraud")["champion"] == stranded
    assert len(loads) == 1  # placed, never trained again

    # A rejected version, or one older than a placed version, stays where it is.
    rejected = republished(reg, "1", status="rejected", extra={"retrain_event_id": "r3"})
    assert service(tmp_path, data, loads).handle(event("r3")).outcome == "duplicate"
    older = republished(reg, "1", extra={"retrain_event_id": "r4"})
    reg.set_alias("fraud", "champion", republished(reg, "1"))
    assert service(tmp_path, data, loads).handle(event("r4")).outcome == "duplicate"
    assert reg.aliases("fraud")["champion"] not in {rejected, older}
    assert len(loads) == 1


def test_a_registry_that_refuses_the_write_defers_the_event_until_it_takes_it(
    tmp_path: Path, data: TrainingSet
) -> None:
    loads: list[int] = []
    svc = service(tmp_path, data, loads)
    blocker = tmp_path / "registry" / "fraud" / "versions"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the versions folder goes: every publish is refused")
    deferred = svc.handle(event("r1"))
    assert deferred.outcome == "deferred" and "RegistryWriteError" in deferred.detail
    assert RetrainLedger(tmp_path / "state" / "retrain-ledger.json").get("r1") is None

    blocker.unlink()
    again = svc.handle(event("r1"))
    assert (again.outcome, again.version) == ("published", "1")
    assert svc.registry.aliases("fraud")["champion"] == "1"
