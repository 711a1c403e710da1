"""The Grafana dashboard's panels over a real run, rendered from a real Prometheus.

Grafana is not installable here, so this draws what its panels would show
without it: ``loopline demo`` runs the whole loop (``--publish-as canary`` by
default, so both rollout arms appear); as soon as the demo has written its
run's settings, a real Prometheus (``loopline up --monitoring``'s, 1 s scrapes,
the shipped rules) is started on a free port scraping every service of the run
on the ports those settings name. When the demo ends, every panel query of
``deploy/grafana/loopline.json`` is asked over the run with ``query_range``
(``$__rate_interval`` becomes ``--rate-window``), the drift-alarm and
model-swap annotations are drawn as vertical lines, and matplotlib renders the
panels into one PNG, labelled as what it is: not a Grafana screenshot.

Printed: per panel, the series that had data and their last values.

Run: ``python benchmarks/dashboard_from_prometheus.py [--out docs/img/dashboard-from-prometheus.png]
[-- <extra loopline demo arguments>]`` (needs the demo extra: matplotlib).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from loopline.config.loader import load_settings
from loopline.stack import free_port
from loopline.stack.dashboard import DashboardQuery, load, prometheus_expr, queries
from loopline.stack.monitoring import Monitoring

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "loopline.json"
RUN_LINE = re.compile(r"run \S+: state in (\S+)")
# Annotation name -> the panels it is drawn on.
ANNOTATED = {
    "annotation: Drift alarms": ("Drift statistics and their references",),
    "annotation: Model swaps": ("Model swaps in serving",),
    "annotation: Rollout decisions": ("Labels per arm and rollout state",),
}
MAX_LEGEND = 8
LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")

Series = list[tuple[dict[str, str], list[tuple[float, float]]]]


def query_range(prometheus: str, expr: str, start: float, end: float, step_s: float) -> Series:
    params = {"query": expr, "start": start, "end": end, "step": step_s}
    url = f"{prometheus}/api/v1/query_range?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = json.loads(resp.read().decode())
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return [
        (r["metric"], [(float(t), float(v)) for t, v in r["values"]])
        for r in body["data"]["result"]
    ]


def legend(template: str, labels: dict[str, str]) -> str:
    return LABEL.sub(lambda m: labels.get(m.group(1), ""), template).strip() or str(labels)


def run_demo(demo_args: list[str], log: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start ``loopline demo``; returns it and its run's settings file, once written."""
    argv = [sys.executable, "-m", "loopline.cli", "demo", "--no-console", *demo_args]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    with open(log, "w") as out:
        for line in proc.stdout:
            out.write(line)
            out.flush()
            match = RUN_LINE.search(line)
            if match:
                return proc, Path(match.group(1)) / "loopline.toml"
    raise SystemExit(f"the demo ended before naming its run; see {log}")


def finish_demo(proc: subprocess.Popen[str], log: Path) -> tuple[int, float | None, float | None]:
    """Wait for the demo; returns its exit code and when its services were all up and
    when its live traffic last reported (the window worth drawing)."""
    assert proc.stdout is not None
    services_up = last_live = None
    with open(log, "a") as out:
        for line in proc.stdout:
            out.write(line)
            print(f"  demo | {line.rstrip()}", flush=True)
            if "services up:" in line:
                services_up = time.time()
            elif line.startswith("live:") and services_up is not None:
                last_live = time.time()
    return proc.wait(), services_up, last_live


def collect(
    prometheus: str, start: float, end: float, window: str, step_s: float
) -> dict[DashboardQuery, Series]:
    return {
        q: query_range(prometheus, prometheus_expr(q.expr, window), start, end, step_s)
        for q in queries(load(DASHBOARD))
    }


def _scaled(unit: str, value: float) -> tuple[float, str]:
    if unit == "s":
        return value * 1000.0, "ms"
    if unit == "percentunit":
        return value * 100.0, "%"
    return value, {"reqps": "req/s", "ops": "per s", "short": ""}.get(unit, unit)


def annotation_times(data: dict[DashboardQuery, Series], name: str, step_s: float) -> list[float]:
    """Where an annotation's series start, or start again after a gap: its events."""
    times = []
    for q in (q for q in data if q.panel == name):
        for _, points in data[q]:
            previous = None
            for t, _ in points:
                if previous is None or t - previous > 1.5 * step_s:
                    times.append(t)
                previous = t
    return times


def render(
    data: dict[DashboardQuery, Series],
    *,
    start: float,
    end: float,
    step_s: float,
    out: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[DashboardQuery]] = {}
    for q in data:
        if not q.is_annotation:
            panels.setdefault(q.panel, []).append(q)
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.1 * rows), squeeze=False)
    for ax, (panel, targets) in zip(axes.flat, panels.items(), strict=False):
        unit = ""
        for q in targets:
            for labels, points in data[q]:
                finite = [(t, v) for t, v in points if math.isfinite(v)]
                if not finite:
                    continue
                ys = [_scaled(q.unit, v) for _, v in finite]
                unit = ys[0][1]
                xs = [(t - start) / 60.0 for t, _ in finite]
                ax.plot(xs, [y for y, _ in ys], linewidth=1.1, label=legend(q.legend, labels))
        for name, on in ANNOTATED.items():
            if panel in on:
                for t in annotation_times(data, name, step_s):
                    ax.axvline((t - start) / 60.0, color="red", alpha=0.35, lw=0.8)
        ax.set_xlim(0, (end - start) / 60.0)
        ax.set_title(panel, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        if handles:
            more = len(handles) - MAX_LEGEND
            if more > 0:
                handles, names = (
                    handles[:MAX_LEGEND],
                    [*names[: MAX_LEGEND - 1], f"+{more + 1} more"],
                )
            ax.legend(handles, names, fontsize=6, loc="upper left", ncol=2, framealpha=0.6)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("minutes (live phase of the demo)", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def report(data: dict[DashboardQuery, Series]) -> int:
    """Print each query's series and last values; returns how many panels had no data."""
    empty = 0
    for q, series in data.items():
        lasts = []
        for labels, points in series:
            finite = [v for _, v in points if math.isfinite(v)]
            if finite:
                lasts.append(f"{legend(q.legend, labels) or '-'}={finite[-1]:.4g}")
        if not lasts and not q.is_annotation:
            empty += 1
        shown = ", ".join(lasts[:4]) + (f", ... ({len(lasts)} series)" if len(lasts) > 4 else "")
        print(f"{q.panel} [{q.ref}]: {shown or 'no data'}")
    return empty


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "img" / "dashboard-from-prometheus.png"
    )
    p.add_argument("--rate-window", default="30s", help="what $__rate_interval becomes")
    p.add_argument("--step-s", type=float, default=2.0)
    p.add_argument("demo_args", nargs="*", help="after --: loopline demo arguments")
    args = p.parse_args()
    demo_args = args.demo_args or ["--publish-as", "canary"]
    work = Path(tempfile.mkdtemp(prefix="loopline-dashboard-"))
    log = work / "demo.log"
    proc, config = run_demo(demo_args, log)
    base = load_settings(config, env={})
    settings = dataclasses.replace(
        base,
        stack=dataclasses.replace(
            base.stack,
            state_dir=work / "state",
            prometheus_port=free_port(),
            scrape_interval_s=1.0,
        ),
    )
    monitoring = Monitoring(settings)
    try:
        (prometheus_status, _) = monitoring.up()
        prometheus = f"http://{prometheus_status.address}"
        started = time.time()
        print(f"prometheus {prometheus} scraping the demo run of {config}", flush=True)
        code, services_up, last_live = finish_demo(proc, log)
        # The live phase, with a little before and after; else the whole run.
        start = services_up - 20.0 if services_up else started
        end = last_live + 10.0 if last_live else time.time()
        data = collect(prometheus, start, end, args.rate_window, args.step_s)
    finally:
        if proc.poll() is None:
            proc.terminate()
        monitoring.down()
    empty = report(data)
    title = (
        "Panels of deploy/grafana/loopline.json rendered from a real Prometheus run "
        f"(loopline demo {' '.join(demo_args)}), not a Grafana screenshot"
    )
    render(data, start=start, end=end, step_s=args.step_s, out=args.out, title=title)
    load1, load5, _ = os.getloadavg()
    print(
        f"demo exit code {code}; {empty} panel queries without data over "
        f"{(end - start) / 60:.1f} min; load average {load1:.1f} / {load5:.1f}; wrote {args.out}"
    )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
