"""The demo's HTML report: latency, model quality over time, freshness, versions.

Binary models get scores coloured by label and AUC per 10 s; regression
models get predicted vs actual and RMSE per 10 s. matplotlib renders PNGs
inlined in one self-contained HTML file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.demo.metrics import per_window

if TYPE_CHECKING:
    from loopline.contracts.schemas import LabeledExample
    from loopline.demo.checks import Check
    from loopline.demo.run import DemoRun

WINDOW_S = 10


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def write_html(
    run: DemoRun,
    *,
    labeled: list[LabeledExample],
    versions: list[Any],
    standing: dict[str, str],
    checks: list[Check],
    lines: list[str],
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = run.live_start_wall_s or run.started_wall_s
    marks = [("drift", run.drift_wall_s - t0, "tab:red")]
    served_at = first_served(run)
    if served_at is not None:
        marks.append(("new model served", served_at - t0, "tab:green"))

    def mark(ax: Any) -> None:
        for label, x, color in marks:
            ax.axvline(x, color=color, linestyle="--", label=label)

    images: list[tuple[str, str]] = []
    ok = [r.latency_ms for r in run.stats.records if r.ok]
    fig, ax = plt.subplots(figsize=(7, 3))
    if ok:
        ax.hist(ok, bins=80, range=(0, max(np.percentile(ok, 99.5), 1.0)))
    ax.set_xlabel("Predict latency, client-observed (ms)")
    ax.set_ylabel("calls")
    images.append(("Predict latency", _figure_png(fig)))
    plt.close(fig)

    metric_name, metric = per_window(run.task)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    if labeled:
        tt = np.array([e.event_time / 1000 - t0 for e in labeled])
        sc = np.array([e.score for e in labeled])
        lb = np.array([e.label for e in labeled], dtype=np.float64)
        if run.task == "regression":
            ax1.scatter(tt, sc - lb, s=2, alpha=0.4)
        else:
            ax1.scatter(tt, sc, s=2, c=np.where(lb == 1, "tab:red", "tab:blue"), alpha=0.4)
        edges = np.arange(tt.min(), tt.max() + WINDOW_S, WINDOW_S)
        centers, values = [], []
        for lo in edges[:-1]:
            sel = (tt >= lo) & (tt < lo + WINDOW_S)
            centers.append(lo + WINDOW_S / 2)
            values.append(metric(lb[sel], sc[sel]) if sel.sum() > 20 else math.nan)
        ax2.plot(centers, values, marker="o")
    ax1.set_ylabel("error (predicted - actual)" if run.task == "regression" else "score (red: 1)")
    ax2.set_ylabel(f"{metric_name} per {WINDOW_S} s")
    ax2.set_xlabel("seconds since live traffic began")
    mark(ax1)
    mark(ax2)
    # AUC falls at the drift, RMSE rises: keep the legend off the line.
    ax2.legend(loc="upper left" if run.task == "regression" else "lower left")
    kind = "Errors" if run.task == "regression" else "Scores"
    images.append((f"{kind} and {metric_name} over time", _figure_png(fig)))
    plt.close(fig)

    if run.task == "regression" and labeled:
        images.append(("Predicted vs actual", _predicted_vs_actual(run, labeled, plt)))

    fig, ax = plt.subplots(figsize=(7, 3))
    pts = run.scraper.points if run.scraper else []
    xs = [p.wall_s - t0 for p in pts]
    ax.plot(xs, [p.freshness_p50_s * 1000 for p in pts], label="p50")
    ax.plot(xs, [p.freshness_p99_s * 1000 for p in pts], label="p99")
    ax.set_ylabel("freshness, event -> Redis (ms)")
    ax.set_xlabel("seconds since live traffic began")
    mark(ax)
    ax.legend()
    images.append(("Feature freshness over time", _figure_png(fig)))
    plt.close(fig)
    return _document(
        run, versions=versions, standing=standing, checks=checks, lines=lines, images=images
    )


def _predicted_vs_actual(run: DemoRun, labeled: list[LabeledExample], plt: Any) -> str:
    """Served prediction vs observed value, by phase: the drift should move points off y=x."""
    served = run.stats.versions_served()
    newest = served[-1] if len(served) > 1 else None
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    phases = (
        ("before the drift", "tab:blue", lambda e: e.event_time / 1000 < run.drift_wall_s),
        (
            "after it, old model",
            "tab:red",
            lambda e: e.event_time / 1000 >= run.drift_wall_s and e.model_version != newest,
        ),
        ("new model", "tab:green", lambda e: e.model_version == newest),
    )
    for name, color, keep in phases:
        part = [e for e in labeled if keep(e)]
        if part:
            ax.scatter(
                [e.label for e in part],
                [e.score for e in part],
                s=3,
                alpha=0.4,
                color=color,
                label=name,
            )
    values = [e.label for e in labeled] + [e.score for e in labeled]
    lo, hi = min(values), max(values)
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="y = x")
    ax.set_xlabel("actual (outcome label)")
    ax.set_ylabel("predicted (served score)")
    ax.legend(loc="upper left")
    png = _figure_png(fig)
    plt.close(fig)
    return png


def _document(
    run: DemoRun,
    *,
    versions: list[Any],
    standing: dict[str, str],
    checks: list[Check],
    lines: list[str],
    images: list[tuple[str, str]],
) -> Path:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(x))}</td>"
            for x in (
                v.manifest.version,
                standing.get(v.manifest.version, v.manifest.status),
                ", ".join(f"{k} {val:.4f}" for k, val in sorted(v.manifest.metrics.items())[:6]),
                v.manifest.decision,
                sum(v.manifest.rows.values()) if v.manifest.rows else "",
            )
        )
        + "</tr>"
        for v in versions
    )
    check_rows = "".join(
        f"<li><b>{'ok' if c.ok else 'FAILED'}</b> {html.escape(c.name)}: "
        f"{html.escape(c.detail)}</li>"
        for c in checks
    )
    body = "".join(
        f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'>"
        for title, png in images
    )
    doc = f"""<!doctype html><meta charset="utf-8"><title>Loopline demo {run.run_dir.name}</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}
td,th{{border:1px solid #ccc;padding:4px}}table{{border-collapse:collapse}}</style>
<h1>Loopline demo {html.escape(run.run_dir.name)}</h1><ul>{check_rows}</ul>
<pre>{html.escape(chr(10).join(lines))}</pre>{body}
<h2>Model versions</h2><table><tr><th>version</th><th>status</th><th>metrics</th>
<th>decision</th><th>rows</th></tr>{rows}</table>"""
    out_dir = run.config.report_dir or run.run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(doc)
    return path


def first_served(run: DemoRun) -> float | None:
    """When the newest version first answered (wall clock), if a second one did."""
    served = run.stats.versions_served()
    if len(served) < 2:
        return None
    with run.stats.lock:
        for r in run.stats.records:
            if r.ok and r.model_version == served[-1]:
                return r.wall_s
    return None
