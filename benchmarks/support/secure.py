"""What TLS + a bearer token cost the server: the same measurement plaintext and secured.

Both servers run side by side in one run, with the same shape
(processes, threads), model, features and clients; only ``serving.tls_*`` and
``serving.tokens_file`` differ. Certificates and the client's token come from
a throw-away CA (:class:`~loopline.stack.secure_material.SecureMaterial`).
Connections are opened before the measured window, so the figures are the
per-call cost (encryption, the token check), not handshakes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from loopline.contracts.settings import ServingSettings
from loopline.stack.secure_material import SecureMaterial
from support.bench_run import BenchRun
from support.clients import Target, best_of, percentiles, saturation, sequential_client
from support.server import start_server, stop_server


def _modes(material: SecureMaterial) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Mode -> (server's serving settings, client's serving settings)."""
    server = {
        "tls_cert_file": material.cert("grpc"),
        "tls_key_file": material.key("grpc"),
        "tokens_file": material.tokens_file,
    }
    client = {"ca_file": material.ca, "token_file": material.token_file("client")}
    return {"plaintext": ({}, {}), "tls+token": (server, client)}


def measure_security(
    run: BenchRun,
    registry_root: Path,
    requests: list[bytes],
    args: argparse.Namespace,
    steps: list[tuple[int, int]],
) -> dict[str, Any]:
    """Per mode: one sequential client's percentiles and the saturation rows.

    Both servers run side by side and every phase alternates between them, so
    whatever else loads the machine weighs on both alike."""
    material = SecureMaterial.create(run.work / "secure")
    targets: dict[str, Target] = {}
    procs = []
    try:
        for mode, (server_conf, client_conf) in _modes(material).items():
            config = run.server_config(
                registry_root,
                processes=args.processes,
                threads=args.threads,
                overrides={"serving": server_conf},
            )
            proc, port, _metrics_port, lines = start_server(config)
            procs.append(proc)
            print(f"{mode}: {lines[-1].strip()}", flush=True)
            targets[mode] = ServingSettings(port=port, **client_conf)
        out: dict[str, dict[str, Any]] = {mode: {"rows": []} for mode in targets}
        for mode, target in targets.items():
            client = percentiles(sequential_client(target, requests, args.latency_seconds))
            out[mode]["client"] = client
            print(
                f"{mode:>10} 1 client: p50 {client['p50']:.3f} ms p99 {client['p99']:.3f} ms "
                f"p99.9 {client['p999']:.3f} ms",
                flush=True,
            )
        for step in steps:
            for mode, target in targets.items():
                print(f"{mode:>10}", end="")
                out[mode]["rows"] += saturation(target, [step], args.seconds)["rows"]
    finally:
        for proc in procs:
            stop_server(proc)
    for figures in out.values():
        figures["sat"] = best_of(figures.pop("rows"))
    return out


def security_summary(result: dict[str, Any]) -> dict[str, float]:
    """The figures side by side, with secured / plaintext ratios."""
    plain, secure = result["plaintext"], result["tls+token"]
    figures = {
        "client_p50_ms": (plain["client"]["p50"], secure["client"]["p50"]),
        "client_p99_ms": (plain["client"]["p99"], secure["client"]["p99"]),
        "throughput_rps": (plain["sat"]["best"]["rps"], secure["sat"]["best"]["rps"]),
        "max_rps": (plain["sat"]["max"], secure["sat"]["max"]),
    }
    out: dict[str, float] = {}
    print(
        f"\nsecurity cost (TLS + token vs plaintext, measured in this run; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):"
    )
    for name, (a, b) in figures.items():
        ratio = b / a if a else float("nan")
        out[f"plaintext_{name}"] = round(a, 4)
        out[f"secure_{name}"] = round(b, 4)
        out[f"ratio_{name}"] = round(ratio, 3)
        print(f"  {name:<16} plaintext {a:10.3f}   tls+token {b:10.3f}   ratio {ratio:.2f}")
    return out
