"""What serving's poll for an alias change costs on each registry backend.

Serving asks ``registry.aliases(model)`` every ``serving.registry_poll_s``
(the hot path); this measures that call on every backend in one run, the
directory registry being the baseline:

* ``directory``: a local directory (baseline);
* ``fsspec-file``: the shared registry on ``file://``;
* ``fsspec-s3``: the shared registry on S3 (moto's standalone S3 server on
  loopback stands in for S3: no network latency, so this is the client's and
  server's own cost);
* ``mlflow``: the MLflow Model Registry on a real ``mlflow server`` (SQLite).

It also times one publish (a small model file) and one alias move on each.

    python benchmarks/registry_poll.py [--polls 200] [--no-mlflow] [--no-s3]

Prints one line per backend: median and p99 per poll in ms, the ratio to the
directory's median, publish and alias-move times.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from loopline.contracts.settings import RegistrySettings, Settings
from loopline.registry.backend import RegistryBackend, open_registry
from loopline.registry.manifest import ManifestFields
from loopline.stack.component import port_open
from loopline.stack.mlflow_server import MlflowServer
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port

FIELDS = ManifestFields("fraud", "f" * 64, [f"f{i}" for i in range(20)])
MODEL_BYTES = os.urandom(200_000)  # about a 200-tree model's ONNX file


@contextmanager
def moto_s3(work: Path) -> Iterator[str]:
    port = free_port()
    with open(work / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"moto did not start; see {work / 'moto.log'}")
            time.sleep(0.1)
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(name, "bench")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="registry")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def mlflow_server(work: Path) -> Iterator[str]:
    s = Settings()
    s = dataclasses.replace(s, stack=dataclasses.replace(s.stack, mlflow_port=0))
    server = MlflowServer(s, StackPaths.for_state_dir(work / "stack"))
    server.up()
    try:
        yield server.url
    finally:
        server.down()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def measure(name: str, reg: RegistryBackend, polls: int) -> dict[str, float]:
    publish_ms = timed(lambda: reg.publish("fraud", MODEL_BYTES, FIELDS))
    reg.publish("fraud", MODEL_BYTES, FIELDS)
    versions = [v.manifest.version for v in reg.versions("fraud")]
    move_ms = timed(lambda: reg.set_alias("fraud", "champion", versions[-1]))
    for _ in range(5):  # warm connections and caches
        reg.aliases("fraud")
    samples = sorted(timed(lambda: reg.aliases("fraud")) for _ in range(polls))
    assert reg.aliases("fraud")["champion"] == versions[-1], name
    return {
        "median": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        "publish": publish_ms,
        "move": move_ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results: dict[str, dict[str, float]] = {}
        results["directory"] = measure(
            "directory", open_registry(RegistrySettings(path=work / "dir")), args.polls
        )
        shared = RegistrySettings(backend="fsspec", uri=(work / "shared").as_uri())
        results["fsspec-file"] = measure("fsspec-file", open_registry(shared), args.polls)
        if not args.no_s3:
            with moto_s3(work) as endpoint:
                s3 = RegistrySettings(
                    backend="fsspec", uri="s3://registry/bench", endpoint_url=endpoint
                )
                results["fsspec-s3"] = measure("fsspec-s3", open_registry(s3), args.polls)
        if not args.no_mlflow:
            with mlflow_server(work) as url:
                ml = RegistrySettings(backend="mlflow", mlflow_tracking_uri=url)
                results["mlflow"] = measure("mlflow", open_registry(ml), args.polls)
    base = results["directory"]["median"]
    size = len(MODEL_BYTES)
    print(f"alias poll ({args.polls} polls each), publish of a {size} B model, one alias move")
    for name, r in results.items():
        print(
            f"{name:<12} poll median {r['median']:7.3f} ms  p99 {r['p99']:7.3f} ms  "
            f"x{r['median'] / base:6.1f} vs directory   publish {r['publish']:7.1f} ms  "
            f"alias move {r['move']:6.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
