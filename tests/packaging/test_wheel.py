"""The wheel installs and imports under the `loopline` namespace in a clean venv."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, importlib.resources as res, pathlib, sys
venv = pathlib.Path(sys.prefix).resolve()
for name in ["loopline", "loopline.featurecore.features", "loopline.stack", "loopline.streams",
             "loopline.serving", "loopline.trainer", "loopline.v1.inference_pb2_grpc",
             "loopline.oip.grpc_predict_v2_pb2_grpc"]:
    mod = importlib.import_module(name)
    where = pathlib.Path(mod.__file__).resolve()
    assert venv in where.parents, f"{name} imported from {where}, not the venv"
assert (res.files("loopline.v1") / "inference.proto").is_file()
from loopline.featurerepo.loader import load_project
# A feature repo outside the package loads from the installed wheel.
fs = load_project(pathlib.Path(sys.argv[1])).feature_set()
print("ok", len(fs.model_features))
"""


@pytest.mark.slow
def test_wheel_installs_and_imports(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("loopline-*.whl")
    env_dir = tmp_path / "venv"
    # Dependencies come from the machine (no network needed); Loopline itself
    # only from the wheel, which the check proves by where each module lives.
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [str(py), "-c", CHECK, str(ROOT / "examples" / "fraud")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok 20"
    cli = subprocess.run(
        [str(env_dir / "bin" / "loopline"), "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and "loopline" in cli.stdout, cli.stderr
