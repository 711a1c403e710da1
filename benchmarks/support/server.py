"""The real serving command (``python -m loopline.serving``, what ``loopline run serve``
runs) started on a config, its /metrics scraped, and stopped."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loopline.stack.component import port_open

QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))
# The line the server prints once every worker listens: gRPC port, then metrics port.
_READY = re.compile(r"^serving \S+ on [\d.]+:(\d+) .*:(\d+)/metrics")


def server_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser (described by its docstring's first paragraph) with the
    server's shape: ``--processes`` workers of ``--threads`` RPC threads."""
    parser = argparse.ArgumentParser(description=doc.partition("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="server worker processes")
    parser.add_argument("--threads", type=int, default=2, help="RPC threads per worker")
    return parser


def start_server(config: Path) -> tuple[subprocess.Popen, int, int, list[str]]:
    """The server process, its gRPC and metrics ports, and its stderr lines so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopline.serving", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = stderr.readline()
        if not line:
            break
        lines.append(line)
        m = _READY.search(line)
        if m:
            # Keep draining stderr, so a chatty server never blocks on a full pipe.
            threading.Thread(target=lambda: lines.extend(stderr), daemon=True).start()
            return proc, int(m.group(1)), int(m.group(2)), lines
    proc.kill()
    raise SystemExit("the server did not start:\n" + "".join(lines))


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def scrape(metrics_port: int) -> dict[str, Any]:
    """The stage histograms (``buckets``: the ``total`` stage), swap counts, and every
    sample (``samples``, for benchmarks reading other families)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    stages: dict[str, dict[float, float]] = {}
    swaps: Counter[str] = Counter()
    families = text_string_to_metric_families(text.decode())
    samples = [s for family in families for s in family.samples]
    for s in samples:
        if s.name == "loopline_serving_stage_seconds_bucket":
            stages.setdefault(s.labels["stage"], {})[float(s.labels["le"])] = s.value
        elif s.name == "loopline_serving_model_swaps_total":
            swaps[s.labels["result"]] = s.value
    return {
        "buckets": stages.get("total", {}),
        "stages": stages,
        "swaps": swaps,
        "samples": samples,
    }


def histogram_percentiles(
    before: dict[float, float],
    after: dict[float, float],
    quantiles: tuple[tuple[str, float], ...] = QUANTILES,
) -> dict[str, float]:
    """Percentiles (ms) of the observations between two scrapes of a cumulative histogram,
    interpolated within the bucket that holds each rank."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    out = {}
    for name, q in quantiles:
        rank, lo, prev = q * total, 0.0, 0.0
        value = float("nan")
        for b, c in zip(bounds, counts, strict=True):
            if c >= rank:
                width = (b if b != float("inf") else lo) - lo
                value = lo + width * ((rank - prev) / (c - prev) if c > prev else 0.0)
                break
            lo, prev = b, c
        out[name] = value * 1000.0
    return out
