"""The demo's report: did the loop close, and how did it behave on the way.

Numbers come from the running system: the services' Prometheus endpoints
(scraped during the run), the drift, retrain, model-updates and labeled
topics, and the registry. The client-side latency is the driver's own view
as a gRPC client, shown beside the server's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from loopline.config.kafka import consumer_config
from loopline.contracts.topics import Topics
from loopline.demo import metrics
from loopline.demo.checks import Check, Report
from loopline.demo.observe import read_labeled
from loopline.demo.plots import write_html
from loopline.featurerepo.loader import model_of
from loopline.registry.directory import DirectoryRegistry
from loopline.registry.standing import version_standing
from loopline.rollout.plan import RolloutPlan, shadow_request_id

if TYPE_CHECKING:
    from loopline.contracts.schemas import LabeledExample
    from loopline.demo.run import DemoRun

SHADOW_SUFFIX = shadow_request_id("")


def build_report(run: DemoRun, topics: Topics) -> Report:
    s = run.settings
    stats = run.stats
    happened = run.watcher.happened if run.watcher else None
    registry = DirectoryRegistry(s.registry.path)
    model = model_of(s).name
    versions = registry.versions(model)
    standing = version_standing(versions, registry.aliases(model))
    served = stats.versions_served()
    failures = stats.failures()
    # A restarted drift flow may publish an alarm again; its id is stable.
    drift = list({e.id: e for e in happened.drift}.values()) if happened else []
    after_drift = [e for e in drift if e.time_ms / 1000 >= run.drift_wall_s]
    before_drift = [e for e in drift if e.time_ms / 1000 < run.drift_wall_s]
    every_labeled = (
        read_labeled(consumer_config(s.kafka, "demo-report"), topics.labeled)
        if run.live_start_wall_s
        else []
    )
    # Shadow scores repeat an answered request's event: one example per answer here.
    labeled = [e for e in every_labeled if not e.request_id.endswith(SHADOW_SUFFIX)]

    checks = [
        Check(
            "drift detected",
            bool(after_drift),
            f"first alarm {after_drift[0].time_ms / 1000 - run.drift_wall_s:.1f} s after the "
            f"drift ({after_drift[0].kind}:{after_drift[0].feature}); "
            f"{len(after_drift)} alarms, {len(before_drift)} before it"
            if after_drift
            else f"no alarm after the drift ({len(before_drift)} before it)"
            + (
                " - before the drift: "
                + ", ".join(sorted({f"{e.kind}:{e.feature}" for e in before_drift}))
                if before_drift
                else ""
            ),
        ),
        Check(
            "retrain requested",
            bool(happened and happened.retrain),
            f"{len(happened.retrain) if happened else 0} retrain event(s)",
        ),
        Check(
            "new model published",
            len([v for v in versions if v.manifest.status != "rejected"]) > 1,
            f"{len(versions)} version(s) in the registry: "
            + ", ".join(f"v{version} {where}" for version, where in standing.items()),
        ),
        Check("new model served", len(served) > 1, f"Predict answered with versions {served}"),
        Check(
            "no failed Predict",
            not failures and bool(stats.records),
            f"{len(stats.records):,} calls, {len(failures)} failed"
            + (f" (first: {failures[0].error})" if failures else ""),
        ),
    ]
    plans = registry.rollout_history(model)
    if run.config.rollout:
        checks.insert(4, _rollout_check(plans))
    comparison = _compare_models(run, labeled, registry, model, served)
    lines = ["", "Loopline demo report", "=" * 20]
    for c in checks:
        lines.append(f"[{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}")
    lines += _summary_lines(run, labeled, comparison)
    if run.problems:
        lines += ["", "problems:"] + [f"  - {p}" for p in run.problems]
    report = Report(text="", loop_closed=all(c.ok for c in checks), checks=checks)
    try:
        report.html_path = write_html(
            run, labeled=labeled, versions=versions, standing=standing, checks=checks, lines=lines
        )
        lines.append(f"\nHTML report: {report.html_path}")
    except ImportError as e:  # matplotlib missing: the text report still stands
        lines.append(
            f"\nno HTML report ({e}): install the demo extra, pip install 'loopline[demo]'"
        )
    report.text = "\n".join(lines)
    summary = {
        "loop_closed": report.loop_closed,
        "task": run.task,
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        "drift_delay_s": (after_drift[0].time_ms / 1000 - run.drift_wall_s)
        if after_drift
        else None,
        "versions_served": served,
        "rollout": [p.to_dict() for p in plans],
        "predictions": len(stats.records),
        "failed_predictions": len(failures),
        "labeled_examples": len(labeled),
        "shadow_labeled_examples": len(every_labeled) - len(labeled),
        "comparison": comparison,
        "html": str(report.html_path) if report.html_path else None,
    }
    out_dir = run.config.report_dir or run.run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2))
    return report


def _rollout_check(plans: list[RolloutPlan]) -> Check:
    """The retrained version went through a rollout plan and was promoted."""
    # The history holds each plan's records in order; the last record of a plan is its state.
    final = {p.plan_id: p for p in plans}
    promoted = [p for p in final.values() if p.state == "promoted"]
    if promoted:
        p = promoted[-1]
        took = (p.updated_ms - p.created_ms) / 1000
        return Check(
            "rollout promoted",
            True,
            f"v{p.candidate_version} ran as {p.mode} next to v{p.champion_version} and was "
            f"promoted after {took:.0f} s ({p.reason})",
        )
    detail = (
        "; ".join(f"v{p.candidate_version} {p.mode} {p.state} {p.reason}" for p in final.values())
        or "no rollout plan was started"
    )
    return Check("rollout promoted", False, detail)


def _compare_models(
    run: DemoRun,
    labeled: list[LabeledExample],
    registry: DirectoryRegistry,
    model: str,
    served: list[str],
) -> dict[str, float]:
    """Old vs new model on the same post-drift traffic (the logged feature vectors)."""
    if len(served) < 2:
        return {}
    old, new = served[0], served[-1]
    post = [e for e in labeled if e.event_time / 1000 >= run.drift_wall_s]
    if not post:
        return {}
    rows = np.array([e.features for e in post], dtype=np.float64)
    labels = np.array([e.label for e in post], dtype=np.float64)
    scores = {
        name: metrics.score_with(registry.get(model, version).model_path, rows)
        for name, version in (("old", old), ("new", new))
    }
    out = metrics.compare(run.task, labels, scores["old"], scores["new"])
    out["version_old"] = float(old)
    out["version_new"] = float(new)
    return out


def _summary_lines(
    run: DemoRun, labeled: list[LabeledExample], comparison: dict[str, float]
) -> list[str]:
    stats = run.stats
    ok = [r.latency_ms for r in stats.records if r.ok]
    lines = [""]
    wall = (run.live_end_wall_s or run.started_wall_s) - run.started_wall_s
    lines.append(
        f"history {run.history_events:,} events; bootstrap model in {run.bootstrap_s:.1f} s; "
        f"live {stats.events_sent:,} events, {stats.outcomes_sent:,} outcomes; run {wall:.0f} s"
    )
    if ok:
        p = np.percentile(ok, [50, 99, 99.9])
        lines.append(
            f"Predict client latency: p50 {p[0]:.2f} ms, p99 {p[1]:.2f} ms, p99.9 {p[2]:.2f} ms"
        )
    point = run.scraper.points[-1] if run.scraper and run.scraper.points else None
    if point is not None and run.scraper is not None:
        from loopline.contracts import metric_names as mn
        from loopline.demo.observe import quantile

        total = run.scraper.live_buckets("serve", mn.SERVING_STAGE_SECONDS.name, stage="total")
        fresh = run.scraper.live_buckets("features", mn.FEATURES_FRESHNESS_SECONDS.name)
        lines.append(
            "Predict server-side latency (Prometheus, live phase): "
            f"p50 {quantile(total, 0.5) * 1000:.2f} ms, p99 {quantile(total, 0.99) * 1000:.2f} ms"
        )
        lines.append(
            "feature freshness, event -> Redis (Prometheus, live phase): "
            f"p50 {quantile(fresh, 0.5) * 1000:.1f} ms, p99 {quantile(fresh, 0.99) * 1000:.1f} ms"
        )
    lines.append(f"labeled examples: {len(labeled):,}")
    if comparison:
        lines.append(metrics.describe(run.task, comparison))
    return lines
