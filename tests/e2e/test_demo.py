"""A shortened `loopline demo` on both example repos: the loop closes on the real stack.

Traffic flows, an abrupt drift is injected at a known time, and the run must
show a drift event on the drift topic within a bounded delay, a retrain
event, a new model version published and served, the new model better than
the old one on post-drift traffic (AUC for the binary fraud example, RMSE
for the regression delivery example), and zero failed Predict calls. With
``--publish-as shadow`` the retrained version must also go through a shadow
rollout that the watcher promotes from labels. The fraud champion run is
``--secure``: on its own secure stack (TLS and logins on Kafka and Redis, ACLs
per service, gRPC over TLS with a token, signed models), and no secret may
appear in any log or report it leaves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.contracts.settings import Settings
from loopline.stack.ports import free_port

MAX_DRIFT_DELAY_S = 30.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("repo", "publish_as", "secure"),
    [("fraud", "champion", True), ("fraud", "shadow", False), ("delivery", "champion", False)],
)
def test_shortened_demo_closes_the_loop(
    stack_settings: Settings, tmp_path: Path, repo: str, publish_as: str, secure: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env["LOOPLINE_STACK__STATE_DIR"] = str(tmp_path / "state")
    if secure:  # a stack of its own, started (and stopped) by the demo
        kafka_port = free_port()
        env["LOOPLINE_STACK__KAFKA_PORT"] = str(kafka_port)
        env["LOOPLINE_STACK__KAFKA_CONTROLLER_PORT"] = str(free_port())
        env["LOOPLINE_STACK__KAFKA_SSL_PORT"] = str(free_port())
        env["LOOPLINE_KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{kafka_port}"
        env["LOOPLINE_REDIS__PORT"] = str(free_port())
    else:
        env["LOOPLINE_KAFKA__BOOTSTRAP_SERVERS"] = stack_settings.kafka.bootstrap_servers
        env["LOOPLINE_REDIS__HOST"] = stack_settings.redis.host
        env["LOOPLINE_REDIS__PORT"] = str(stack_settings.redis.port)
    cmd = [
        sys.executable,
        "-m",
        "loopline.cli",
        "demo",
        "--repo",
        str(EXAMPLES / repo),
        "--no-console",
        "--history-s",
        "420",
        "--live-s",
        "120",
        "--rate",
        "100",
        "--grace-s",
        "60" if publish_as == "champion" else "90",
        "--publish-as",
        publish_as,
        "--report-dir",
        str(tmp_path / "report"),
        *(["--secure"] if secure else []),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    summary_path = tmp_path / "report" / "report.json"
    assert summary_path.exists(), f"no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    summary = json.loads(summary_path.read_text())
    failed = {k: v["detail"] for k, v in summary["checks"].items() if not v["ok"]}
    assert not failed, f"{failed}\n{done.stderr[-3000:]}"
    assert done.returncode == 0
    assert summary["drift_delay_s"] is not None and summary["drift_delay_s"] <= MAX_DRIFT_DELAY_S
    assert summary["failed_predictions"] == 0 and summary["predictions"] > 5000
    assert len(summary["versions_served"]) >= 2
    comparison = summary["comparison"]
    if repo == "delivery":  # regression: compared by RMSE on the same post-drift requests
        assert summary["task"] == "regression"
        assert comparison["rmse_new"] < comparison["rmse_old"], comparison
    else:
        assert summary["task"] == "binary"
        assert comparison["auc_new"] > comparison["auc_old"], comparison
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000
    if secure:
        _assert_no_secret_leaked(tmp_path, done.stdout + done.stderr)
    plans = summary["rollout"]
    if publish_as == "champion":
        assert plans == []
        return
    assert summary["checks"]["rollout promoted"]["ok"]
    final = {p["plan_id"]: p for p in plans}
    promoted = [p for p in final.values() if p["state"] == "promoted"]
    assert promoted and promoted[-1]["mode"] == "shadow"
    assert promoted[-1]["candidate_version"] in summary["versions_served"]
    assert summary["shadow_labeled_examples"] > 0


def _assert_no_secret_leaked(tmp_path: Path, output: str) -> None:
    """No password, token or key of the secure stack in any log, report or output."""
    secrets_dir = tmp_path / "state" / "secure" / "secrets"
    values = [
        f.read_text().strip()
        for f in secrets_dir.iterdir()
        if f.suffix in {".password", ".token", ".key"}
    ]
    assert len(values) >= 10, sorted(f.name for f in secrets_dir.iterdir())
    texts = {"output": output}
    for root in (tmp_path / "state" / "demo", tmp_path / "state" / "logs", tmp_path / "report"):
        for f in root.rglob("*"):
            if f.is_file() and f.suffix in {".log", ".json", ".html", ".txt", ".toml"}:
                texts[str(f)] = f.read_text(errors="replace")
    leaks = [where for where, text in texts.items() for v in values if v in text]
    assert not leaks, f"a secret appears in: {sorted(set(leaks))}"
