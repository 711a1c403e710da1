"""Rendering for people: training progress, the final summary, registry tables."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from loopline.registry.directory import ModelVersion
from loopline.trainer.pipeline import TrainingReport

METRICS = ("auc", "log_loss", "brier", "ece")
# The metrics each task's summary shows (holdout), in order.
TASK_METRICS = {"binary": METRICS, "regression": ("rmse", "mae", "r2")}
HIGHER_IS_BETTER = {"auc", "r2"}


def utc(ms: int, short: bool = False) -> str:
    """Epoch milliseconds as a UTC time.

    >>> utc(1_700_000_000_000), utc(1_700_000_000_000, short=True)
    ('2023-11-14 22:13 UTC', '11-14 22:13')
    """
    if not ms:
        return "-"
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%m-%d %H:%M") if short else t.strftime("%Y-%m-%d %H:%M UTC")


def _span(window: list[int]) -> str:
    if len(window) != 2 or not window[0]:
        return "-"
    return f"{utc(window[0], short=True)} +{(window[1] - window[0]) / 3_600_000:.0f}h"


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


class ConsoleProgress:
    """Stage lines with elapsed time, and a bar while boosting."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self._bar: RichBar | None = None
        self._task: Any = None

    def _elapsed(self) -> str:
        return f"[dim]{time.monotonic() - self.started:7.1f}s[/dim]"

    def stage(self, name: str) -> None:
        self._close_bar()
        self.console.print(f"{self._elapsed()} [bold]{name}[/bold]")

    def info(self, message: str) -> None:
        self._close_bar()
        self.console.print(f"{self._elapsed()}   {message}", highlight=False)

    def iteration(self, i: int, total: int, valid_log_loss: float) -> None:
        if self._bar is None:
            self._bar = RichBar(
                TextColumn("           boosting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("valid loss {task.fields[loss]:.5f}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("boost", total=total, loss=valid_log_loss)
        self._bar.update(self._task, completed=i, loss=valid_log_loss)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self) -> None:
        self._close_bar()


class LogProgress:
    """Progress as log lines (the long-running service)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    def stage(self, name: str) -> None:
        self.log.info("training: %s", name)

    def info(self, message: str) -> None:
        self.log.info("training:   %s", message)

    def iteration(self, i: int, total: int, valid_log_loss: float) -> None:
        if i % 50 == 0:
            self.log.info("training:   iteration %d/%d valid loss %.5f", i, total, valid_log_loss)


def summary(report: TrainingReport, load_s: float | None = None) -> Table:
    """The end-of-run summary: window, rows, class balance, metrics vs champion, decision."""
    r = report
    t = Table(title=f"Training summary: {r.model_name} v{r.version}", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    start, end = r.window_ms
    hours = (end - start) / 3_600_000
    t.add_row("task", r.task)
    t.add_row("source", r.source)
    t.add_row("data window", f"{utc(start)} -> {utc(end)} ({hours:.1f} h)")
    rows = r.rows
    total = rows["train"] + rows["valid"] + rows["holdout"]
    t.add_row(
        "rows",
        f"{total} (train {rows['train']}, validation {rows['valid']}, holdout {rows['holdout']})",
    )
    if r.dropped:
        t.add_row("left out", ", ".join(f"{k} {v}" for k, v in sorted(r.dropped.items())))
    if r.task == "binary":
        pos = rows["train_positives"] + rows["valid_positives"] + rows["holdout_positives"]
        t.add_row(
            "class balance",
            f"{pos} positive / {total - pos} negative ({pos / max(total, 1):.2%} positive; "
            f"holdout {rows['holdout_positives']} positive)",
        )
    elif "label_mean" in r.metrics:
        t.add_row("holdout label mean", fmt(r.metrics["label_mean"]))
    t.add_row("best iteration", str(r.best_iteration))
    kind = "relative" if r.task == "regression" else "abs"
    t.add_row("ONNX parity", f"max {kind} diff {r.parity_max_abs_diff:.2e}")
    t.add_row("metrics (holdout)", metrics_table(r))
    if not r.accepted:
        verdict = "[yellow]rejected candidate[/yellow]"
    elif r.published_as in ("shadow", "canary"):
        verdict = f"[cyan]{r.published_as} rollout candidate[/cyan]"
    else:
        verdict = "[green]champion[/green]"
    t.add_row("decision", f"{verdict}: {r.decision}")
    if r.accepted:
        t.add_row("announced", "yes" if r.announced else "no (announcing disabled)")
    stages = {"load data": load_s} if load_s is not None else {}
    stages.update(r.stage_seconds)
    total = r.duration_s + (load_s or 0.0)
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in stages.items())
    t.add_row("duration", f"{total:.1f} s ({parts})")
    return t


def metrics_table(r: TrainingReport) -> Table:
    champ = r.champion_metrics
    t = Table(box=None, padding=(0, 1))
    t.add_column("metric")
    t.add_column("challenger", justify="right")
    if champ is not None:
        t.add_column(f"champion v{r.champion_version}", justify="right")
        t.add_column("delta", justify="right")
    for m in TASK_METRICS.get(r.task, METRICS):
        mine = r.metrics.get(m)
        if champ is None:
            t.add_row(m, fmt(mine))
            continue
        theirs = champ.get(m)
        delta = "-" if mine is None or theirs is None else f"{mine - theirs:+.4f}"
        t.add_row(m, fmt(mine), fmt(theirs), delta)
    if champ is None and r.champion_version:
        t.caption = f"champion v{r.champion_version} not comparable"
    return t


WIDE = 130  # below this many columns, `models list` leaves out the less useful ones


def versions_table(
    model: str, versions: list[ModelVersion], aliases: dict[str, str], width: int = WIDE
) -> Table:
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(v, []).append(alias)
    wide = width >= WIDE
    t = Table(title=f"{model}: {len(versions)} version(s) (times UTC)", box=box.SIMPLE_HEAD)
    columns = ["version", "created", "status", "aliases", "auc", "log loss", "brier", "rows"]
    if any(v.manifest.task == "regression" for v in versions):
        columns[4:4] = ["rmse", "mae"]
    columns += ["data window", "parent"] if wide else []
    if not wide:
        columns = [c for c in columns if c not in {"created", "brier"}]
    numeric = {"auc", "log loss", "brier", "rows", "rmse", "mae"}
    for col in columns:
        t.add_column(col, justify="right" if col in numeric else "left", no_wrap=True)
    t.add_column("decision", overflow="fold", min_width=10)
    for mv in versions:
        m = mv.manifest
        names = ", ".join(sorted(by_version.get(m.version, [])))
        cells = {
            "version": m.version,
            "created": utc(m.created_ms, short=True),
            "status": f"[yellow]{m.status}[/yellow]" if m.status == "rejected" else m.status,
            "aliases": f"[green]{names}[/green]" if names else "",
            "auc": fmt(m.metrics.get("auc")),
            "log loss": fmt(m.metrics.get("log_loss")),
            "brier": fmt(m.metrics.get("brier")),
            "rmse": fmt(m.metrics.get("rmse")),
            "mae": fmt(m.metrics.get("mae")),
            "rows": str(sum(m.rows.get(k, 0) for k in ("train", "valid", "holdout"))),
            "data window": _span(m.training_window_ms),
            "parent": m.parent_version or "-",
        }
        decision = short_decision(m.decision, m.extra.get("gate") or {})
        t.add_row(*(cells[c] for c in columns), decision)
    return t


def short_decision(decision: str, gate: dict[str, Any]) -> str:
    """The verdict and, when the gate objected, which metrics.

    >>> short_decision("rejected: auc 0.8 vs champion 0.9 (...)", {"checks": [
    ...     {"metric": "auc", "passed": False}, {"metric": "brier", "passed": True}]})
    'rejected (worse auc)'
    >>> short_decision("accepted: no champion yet", {})
    'accepted: no champion yet'
    """
    verdict = decision.partition(":")[0]
    failed = [c["metric"] for c in gate.get("checks", []) if not c.get("passed", True)]
    if failed:
        return f"{verdict} (worse {', '.join(failed)})"
    if gate.get("checks"):
        return verdict
    return decision


def version_detail(mv: ModelVersion, aliases: dict[str, str]) -> Table:
    m = mv.manifest
    t = Table(title=f"{m.model_name} v{m.version}", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    names = sorted(a for a, v in aliases.items() if v == m.version)
    t.add_row("aliases", ", ".join(names) or "-")
    t.add_row("status", m.status)
    t.add_row("task", m.task)
    t.add_row("decision", m.decision or "-")
    t.add_row("created", utc(m.created_ms))
    t.add_row("file", mv.location)
    t.add_row("sha256", m.sha256)
    t.add_row("feature set", f"{m.feature_set} (fingerprint {m.fingerprint[:16]}...)")
    t.add_row("features", ", ".join(m.feature_names))
    t.add_row("input / output", f"{m.input_name} / {m.probability_output}")
    if len(m.training_window_ms) == 2:
        t.add_row(
            "data window", f"{utc(m.training_window_ms[0])} -> {utc(m.training_window_ms[1])}"
        )
    t.add_row("rows", ", ".join(f"{k} {v}" for k, v in sorted(m.rows.items())) or "-")
    t.add_row("metrics", ", ".join(f"{k} {v:.4g}" for k, v in sorted(m.metrics.items())) or "-")
    gate = m.extra.get("gate") or {}
    if gate.get("champion_metrics"):
        champ = gate["champion_metrics"]
        t.add_row(
            f"champion v{gate.get('champion_version')} then",
            ", ".join(f"{k} {fmt(champ.get(k))}" for k in TASK_METRICS.get(m.task, METRICS)),
        )
    t.add_row("parent version", m.parent_version or "-")
    t.add_row("code version", m.code_version or "-")
    t.add_row("source", str(m.extra.get("source", "-")))
    if m.extra.get("retrain_event_id"):
        t.add_row("retrain event", f"{m.extra['retrain_event_id']} ({m.extra.get('trigger')})")
    t.add_row("golden rows", str(len(m.golden_inputs)))
    return t
