"""The Feast peer of ``peer_feast.py``: its own venv, its worker process, its vector spec.

Feast's Redis extra pins a redis-py and a pandas that Loopline's environment
cannot take, so Feast lives in a venv of its own (``.loopline/peer-feast-venv``,
built on first use from the pinned ``benchmarks/peer/requirements-feast.txt``
and rebuilt when that file changes). The benchmark talks to
``benchmarks/peer/feast_worker.py`` in that venv with one JSON line per
command, and starts ``feast serve`` from it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import redis

from loopline.featurecore.features import FeatureSet
from loopline.stack.ports import free_port
from support.server import wait_port

PEER_DIR = Path(__file__).resolve().parent.parent / "peer"
REQUIREMENTS = PEER_DIR / "requirements-feast.txt"
WORKER = PEER_DIR / "feast_worker.py"
REPO_ROOT = PEER_DIR.parent.parent
VENV = REPO_ROOT / ".loopline" / "peer-feast-venv"
# Written after a complete install: the requirements' hash it was built from.
_STAMP = "loopline-requirements.sha256"


def vector_spec(fs: FeatureSet, model_inputs: list[str]) -> list[list[Any]]:
    """The steps building the model's row from Feast's answer (``feast_vector.py``),
    one per input in the model's order (``model_inputs``: the manifest's names)."""
    defaults = {
        f"{v.entity}.{n}": d for v in fs.views for n, d in zip(v.names, v.defaults, strict=True)
    }
    derived = {d.name: d for d in fs.derived}

    def ref(name: str) -> list[Any]:
        if name in defaults:
            return ["stored", name.replace(".", "__", 1), defaults[name]]
        return ["request", name]

    spec: list[list[Any]] = []
    for name in model_inputs:
        if name in defaults:
            spec.append(ref(name))
        elif name in derived:
            d = derived[name]
            spec.append([d.kind, [ref(a) for a in d.args], d.default])
        else:
            raise ValueError(f"model input {name!r} is neither stored nor derived in {fs.name}")
    return spec


def feast_refs(spec: list[list[Any]]) -> list[str]:
    """The Feast feature references (``view:feature``) a spec reads, in first-use order."""
    names: list[str] = []
    for step in spec:
        args = [step] if step[0] in ("stored", "request") else step[1]
        for arg in args:
            if arg[0] == "stored" and arg[1] not in names:
                names.append(arg[1])
    return [n.replace("__", ":", 1) for n in names]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """The Feast venv's interpreter, creating or refreshing the venv when needed."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / _STAMP
    if stamp.exists() and stamp.read_text().strip() == digest and venv_python().exists():
        return venv_python()
    print(
        f"setup: installing Feast into its own venv {VENV} from {REQUIREMENTS.name} "
        "(first run only: a minute on a quiet machine)",
        flush=True,
    )
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    result = subprocess.run(
        [*pip, "-r", str(REQUIREMENTS)], check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"installing Feast failed:\n{result.stdout}{result.stderr}")
    stamp.write_text(digest + "\n")
    return venv_python()


class FeastWorker:
    """``feast_worker.py`` in the Feast venv; :meth:`call` sends one command."""

    def __init__(self, python: Path, log: Path) -> None:
        self.log_path = log
        self._log: IO[str] = log.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=PEER_DIR,
        )

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text()[-3000:]
            raise SystemExit(f"the Feast worker died during {op!r}:\n{tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"the Feast worker refused {op!r}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def feast_rows(fs: FeatureSet, rows: dict[str, list[tuple[str, list[float]]]]) -> dict[str, Any]:
    """Feature values (``bench_run.feature_rows``) as the worker writes them to Parquet:
    per view the ids, the feature names, the values."""
    return {
        view: {
            "ids": [i for i, _ in entries],
            "names": list(fs.view(view).names),
            "values": [v for _, v in entries],
        }
        for view, entries in rows.items()
    }


def start_feast_server(python: Path, repo: Path, workers: int) -> tuple[subprocess.Popen, int]:
    """``feast serve`` (HTTP) on the repo, ``workers`` processes; without an access log and
    without recycling workers every 1,000 requests (its default)."""
    port = free_port()
    command = [str(python.parent / "feast"), "-c", str(repo), "serve", "-h", "127.0.0.1"]
    command += ["-p", str(port), "--no-access-log", "-w", str(workers), "--max-requests", "0"]
    with (repo / "serve.log").open("w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    wait_port(port, timeout_s=120)
    return proc, port


def delete_project_keys(store: redis.Redis, project: str) -> int:
    """Delete the Feast project's keys (each ends with the project's name); how many."""
    keys = list(store.scan_iter(match=f"*{project}", count=5000))
    for i in range(0, len(keys), 5000):
        store.delete(*keys[i : i + 5000])
    return len(keys)
