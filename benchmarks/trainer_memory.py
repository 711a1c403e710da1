"""The trainer's memory over repeated trainings on the same data: a leak, or data growth?

The soak saw the trainer's RSS floor rise while its labeled log grew. This
separates the two: one process trains ``--runs`` times on the very same
data, as ``loopline run trainer`` trains on each retrain event, and reads its
RSS after each run and a garbage collection. The data is the fraud
simulator's history replayed through the feature code, written once as a
labeled log into an offline store; each run then loads the window from the
store (pyarrow), trains LightGBM, exports ONNX, checks parity and publishes
into a scratch registry. With the data fixed, a leak shows as a floor that
keeps rising; growth that comes from data shows in the soak only.

Printed: RSS after each run, the slope over the second half (MiB per run,
least squares), then one JSON line. Needs no servers (the history is the
fraud simulator's, written to JSONL as ``loopline train --bootstrap-events``
reads it).

Run: ``python benchmarks/trainer_memory.py [--runs 12] [--trees 40]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from support.models import TrainedModels
from support.proc_tree import rss_bytes

from loopline.config.loader import load_settings
from loopline.contracts.schemas import LabeledExample
from loopline.featurerepo.loader import project_of
from loopline.registry.directory import DirectoryRegistry
from loopline.storage.offline_store import write_examples

if TYPE_CHECKING:
    from loopline.trainer.dataset import TrainingSet

MIB = 1024 * 1024


def labeled_log(ts: TrainingSet, model: str, fingerprint: str) -> Iterator[LabeledExample]:
    """The training set's rows as the labels flow writes them to the offline store."""
    for i, event_id in enumerate(ts.ids):
        t = int(ts.event_time_ms[i])
        yield LabeledExample(
            request_id=f"r-{event_id}",
            event_id=event_id,
            model_name=model,
            model_version="1",
            fingerprint=fingerprint,
            entities={},
            features=[float(v) for v in ts.features[i]],
            score=0.5,
            label=float(ts.labels[i]),
            event_time=t,
            labeled_at_ms=t + 3_600_000,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--trees", type=int, default=40, help="LightGBM trees per training")
    parser.add_argument("--max-mib-per-run", type=float, default=2.0, help="the invariant")
    args = parser.parse_args()

    from loopline.trainer.data import DataRequest, load_training_set
    from loopline.trainer.pipeline import Trainer

    work = Path(tempfile.mkdtemp(prefix="loopline-trainer-memory-"))
    settings = load_settings()
    trainer_conf = dataclasses.replace(
        settings.trainer, num_trees=args.trees, early_stopping_rounds=args.trees
    )
    settings = dataclasses.replace(settings, trainer=trainer_conf)
    print("history: the fraud simulator's, 6 hours at 2 events/s", flush=True)
    events, outcomes = TrainedModels(settings, work).history(seed=0)
    fs = project_of(settings).feature_set(settings.project.model)
    history = load_training_set(
        settings, DataRequest(bootstrap_events=str(events), bootstrap_outcomes=str(outcomes))
    )
    store = work / "offline"
    write_examples(store, labeled_log(history, fs.name, fs.fingerprint), "history")
    settings = dataclasses.replace(
        settings, trainer=dataclasses.replace(settings.trainer, offline_store=store)
    )
    end_ms = int(history.event_time_ms.max()) + 1
    request = DataRequest(window_hours=24.0, end_ms=end_ms, fallback_to_bootstrap=False)
    print(f"offline store: {len(history)} labeled rows in {store}", flush=True)
    registry = DirectoryRegistry(work / "registry")
    rss: list[float] = []
    for run in range(1, args.runs + 1):
        t0 = time.perf_counter()
        data = load_training_set(settings, request)
        report = Trainer(settings.trainer, registry, fs=fs).train(data, force=True)
        del data, report
        gc.collect()
        rss.append(rss_bytes(os.getpid()) / MIB)
        print(
            f"  run {run:>2}: {time.perf_counter() - t0:5.1f} s, RSS {rss[-1]:7.1f} MiB", flush=True
        )
    half = rss[len(rss) // 2 :]
    slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else 0.0
    ok = slope <= args.max_mib_per_run
    print(
        f"RSS after run 1 {rss[0]:.1f} MiB, after run {len(rss)} {rss[-1]:.1f} MiB; "
        f"second half {slope:+.2f} MiB per run (invariant <= {args.max_mib_per_run}: "
        f"{'ok' if ok else 'FAILED'})"
    )
    print(
        json.dumps(
            {
                "runs": len(rss),
                "rss_mib": [round(x, 1) for x in rss],
                "mib_per_run_second_half": round(slope, 3),
                "invariant_ok": ok,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
