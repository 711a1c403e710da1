"""Prometheus alert rules and configuration, checked by promtool (Debian's prometheus package).

Needs no Kafka: promtool runs the rule unit tests on its own in-memory TSDB.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "loopline.rules.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install prometheus", pytrace=False)
    return path


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_configuration_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    tests = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.test.yml"))
    assert tests
    result = run(promtool, "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_catches_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    # Guards the guard: the same machinery must fail when an alert is expected wrongly.
    bad = tmp_path / "bad.test.yml"
    bad.write_text(
        f"""
rule_files: ["{RULES}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="loopline-serving",instance="a"}}'
        values: "1x20"
    alert_rule_test:
      - eval_time: 10m
        alertname: LooplineComponentDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: loopline-serving, instance: a}}
"""
    )
    result = run(promtool, "test", "rules", str(bad))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
