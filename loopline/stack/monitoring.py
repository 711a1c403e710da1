"""Prometheus and Grafana beside the local stack: ``loopline up --monitoring``.

Prometheus scrapes every component's metrics port as the settings configure
them, with the shipped alert rules (``deploy/prometheus/rules/``). Grafana is
started only where its binary is installed (``grafana-server`` or ``grafana``
on PATH; Debian has no package for it), provisioned with the shipped datasource
and the dashboard ``deploy/grafana/loopline.json``. Both follow the stack's
rules (:mod:`loopline.stack.component`): reused when something answers, else
started, recorded under ``stack.state_dir`` and stopped by ``loopline down``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from abc import abstractmethod
from pathlib import Path
from typing import Any

import yaml

import loopline
from loopline.contracts.errors import ConfigError, StackError
from loopline.contracts.settings import Settings
from loopline.stack import locks, process
from loopline.stack.component import Component, ComponentStatus, Progress
from loopline.stack.paths import StackPaths

PROMETHEUS_INSTALL = "apt-get install prometheus"
GRAFANA_BINARIES = ("grafana-server", "grafana")
RULES = Path("prometheus") / "rules" / "loopline.rules.yml"
DASHBOARD = Path("grafana") / "loopline.json"
GRAFANA_PROVISIONING = Path("grafana") / "provisioning"
# Addresses a server binds to for "every interface": Prometheus scrapes loopback instead.
ANY_HOST = frozenset({"", "0.0.0.0", "::", "[::]"})


def deploy_dir(settings: Settings) -> Path:
    """The folder holding ``prometheus/rules`` and ``grafana/`` (``stack.deploy_dir``)."""
    configured = settings.stack.deploy_dir
    root = configured or Path(loopline.__file__).resolve().parents[1] / "deploy"
    root = root.expanduser().resolve()
    for needed in (RULES, DASHBOARD):
        if not (root / needed).is_file():
            raise ConfigError(
                f"{root / needed} not found: set stack.deploy_dir to the deploy/ folder of a "
                "Loopline checkout (it holds prometheus/rules/ and grafana/loopline.json)"
            )
    return root


def scrape_targets(settings: Settings) -> dict[str, str]:
    """Prometheus job -> host:port of each component's metrics endpoint (ports < 1: off).

    The job names are those of ``deploy/prometheus/prometheus.yml``; the alert
    rules select ``job=~"loopline-.*"``.
    """
    host = settings.serving.host
    serving_host = "127.0.0.1" if host in ANY_HOST else host
    ports = {
        "loopline-serving": (serving_host, settings.serving.metrics_port),
        "loopline-features": ("127.0.0.1", settings.streams.metrics_port),
        "loopline-labels": ("127.0.0.1", settings.labels.metrics_port),
        "loopline-trainer": ("127.0.0.1", settings.trainer.metrics_port),
        "loopline-retrain-policy": ("127.0.0.1", settings.policy.metrics_port),
        "loopline-drift": ("127.0.0.1", settings.drift.metrics_port),
        "loopline-rollout": ("127.0.0.1", settings.rollout.metrics_port),
    }
    return {job: f"{h}:{port}" for job, (h, port) in ports.items() if port > 0}


def duration(seconds: float) -> str:
    """A duration as Prometheus and Grafana write it.

    >>> duration(15.0), duration(0.25)
    ('15s', '250ms')
    """
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def prometheus_config(settings: Settings, rules: Path) -> dict[str, Any]:
    """The Prometheus configuration `up --monitoring` writes (as a YAML-ready dict)."""
    interval = duration(settings.stack.scrape_interval_s)
    jobs = [
        {"job_name": job, "static_configs": [{"targets": [target]}]}
        for job, target in scrape_targets(settings).items()
    ]
    jobs.append(
        {
            "job_name": "prometheus",
            "static_configs": [{"targets": [f"127.0.0.1:{settings.stack.prometheus_port}"]}],
        }
    )
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


def _get_json(url: str, timeout_s: float = 2.0) -> Any:
    """The JSON body of a 200 answer at ``url``, or None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _binary_version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"version (\d[\w.+\-]*)", done.stdout + done.stderr, re.IGNORECASE)
    return match.group(1) if match else "unknown"


class _LocalServer(Component):
    """A monitoring server on 127.0.0.1, its files under ``<state_dir>/<name>/``."""

    def __init__(self, settings: Settings, paths: StackPaths, progress: Progress | None = None):
        super().__init__(paths, settings.stack.startup_timeout_s, progress)
        self.settings = settings
        self.home = paths.root / self.name

    @property
    @abstractmethod
    def port(self) -> int:
        """The port the settings give it."""

    @abstractmethod
    def _binary(self) -> str:
        """The server's program, or an error saying how to install it."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ports(self) -> list[int]:
        return [self.port]

    def expected_version(self) -> str:
        return _binary_version([self._binary(), "--version"])


class PrometheusServer(_LocalServer):
    """Prometheus on 127.0.0.1:``stack.prometheus_port``, config generated from the settings."""

    name = "prometheus"

    @property
    def port(self) -> int:
        return self.settings.stack.prometheus_port

    @property
    def config_file(self) -> Path:
        return self.home / "prometheus.yml"

    def probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2.0) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def running_version(self) -> str | None:
        info = _get_json(f"http://{self.address}/api/v1/status/buildinfo")
        return info["data"]["version"] if info and "data" in info else None

    def can_start(self) -> str | None:
        return None

    def _binary(self) -> str:
        return process.require_tool("prometheus", PROMETHEUS_INSTALL)

    def prepare(self) -> None:
        self._binary()
        rules = deploy_dir(self.settings) / RULES
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        config = prometheus_config(self.settings, rules)
        header = "# Generated by `loopline up --monitoring`; edits are overwritten.\n"
        self.config_file.write_text(header + yaml.safe_dump(config, sort_keys=False))

    def command(self) -> list[str]:
        return [
            self._binary(),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address={self.address}",
        ]


def grafana_binary() -> str | None:
    """Path of ``grafana-server`` or ``grafana`` (the newer single binary), if installed."""
    for name in GRAFANA_BINARIES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def grafana_home(binary: str) -> Path:
    """Grafana's home (``conf/defaults.ini``, ``public/``): the tarball's folder above
    ``bin/``, else where Debian and RPM packages put it."""
    above_bin = Path(binary).resolve().parents[1]
    if (above_bin / "conf" / "defaults.ini").is_file():
        return above_bin
    return Path("/usr/share/grafana")


def grafana_provisioning(settings: Settings, deploy: Path) -> dict[str, dict[str, Any]]:
    """The shipped provisioning files, pointed at this stack's Prometheus and dashboard.

    Returns {"datasources/loopline.yml": ..., "dashboards/loopline.yml": ...}.
    """
    shipped = deploy / GRAFANA_PROVISIONING
    out: dict[str, dict[str, Any]] = {}
    for kind in ("datasources", "dashboards"):
        out[f"{kind}/loopline.yml"] = yaml.safe_load((shipped / kind / "loopline.yml").read_text())
    for source in out["datasources/loopline.yml"]["datasources"]:
        source["url"] = f"http://127.0.0.1:{settings.stack.prometheus_port}"
        source["jsonData"]["timeInterval"] = duration(settings.stack.scrape_interval_s)
    for provider in out["dashboards/loopline.yml"]["providers"]:
        provider["options"]["path"] = str(deploy / DASHBOARD.parent)
    return out


class GrafanaServer(_LocalServer):
    """Grafana on 127.0.0.1:``stack.grafana_port`` with the Loopline dashboard provisioned."""

    name = "grafana"

    @property
    def port(self) -> int:
        return self.settings.stack.grafana_port

    @property
    def ini(self) -> Path:
        return self.home / "grafana.ini"

    def probe(self) -> bool:
        health = _get_json(f"http://{self.address}/api/health")
        return bool(health and health.get("database") == "ok")

    def running_version(self) -> str | None:
        health = _get_json(f"http://{self.address}/api/health")
        return str(health["version"]) if health and "version" in health else None

    def can_start(self) -> str | None:
        if grafana_binary() is None:
            return f"neither of {', '.join(GRAFANA_BINARIES)} is on PATH"
        return None

    def _binary(self) -> str:
        found = grafana_binary()
        if found is None:
            raise StackError(
                "Grafana is not installed (no grafana-server or grafana on PATH); install it "
                "from Grafana's own packages, or import deploy/grafana/loopline.json by hand"
            )
        return found

    def prepare(self) -> None:
        self._binary()
        provisioning = self.home / "provisioning"
        for relative, content in grafana_provisioning(
            self.settings, deploy_dir(self.settings)
        ).items():
            target = provisioning / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(yaml.safe_dump(content, sort_keys=False))
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        self.ini.write_text(
            "# Generated by `loopline up --monitoring`; edits are overwritten.\n"
            "[server]\n"
            "http_addr = 127.0.0.1\n"
            f"http_port = {self.settings.stack.grafana_port}\n"
            "[paths]\n"
            f"data = {self.home / 'data'}\n"
            f"logs = {self.paths.logs}\n"
            f"plugins = {self.home / 'plugins'}\n"
            f"provisioning = {provisioning}\n"
            "[analytics]\n"
            "reporting_enabled = false\n"
            "check_for_updates = false\n"
            # A local stack: anyone on this machine may look, only admin may edit.
            "[auth.anonymous]\n"
            "enabled = true\n"
            "org_role = Viewer\n"
        )

    def command(self) -> list[str]:
        binary = self._binary()
        serve = [] if Path(binary).name == "grafana-server" else ["server"]
        home = grafana_home(binary)
        return [binary, *serve, f"--homepath={home}", f"--config={self.ini}"]


class Monitoring:
    """Prometheus, and Grafana where installed, for ``up --monitoring``, ``down``, ``status``."""

    def __init__(self, settings: Settings, progress: Progress | None = None) -> None:
        self.settings = settings
        self.paths = StackPaths.for_state_dir(settings.stack.state_dir)
        self.prometheus = PrometheusServer(settings, self.paths, progress)
        self.grafana = GrafanaServer(settings, self.paths, progress)
        self._lock_timeout_s = self.prometheus.lock_timeout_s

    def up(self) -> list[ComponentStatus]:
        with locks.exclusive(self.paths.lock, self._lock_timeout_s):
            started = self.prometheus.up()
            if grafana_binary() is None:
                return [started, self._grafana_missing()]
            try:
                return [started, self.grafana.up()]
            except BaseException:
                if started.started_now:
                    self.prometheus.down()
                raise

    def down(self) -> list[str]:
        with locks.exclusive(self.paths.lock, self._lock_timeout_s):
            stopped = (self.grafana.down(), self.prometheus.down())
        return [message for message in stopped if message is not None]

    def status(self) -> list[ComponentStatus]:
        grafana = self.grafana.status()
        if not grafana.up and not grafana.managed and grafana_binary() is None:
            grafana = self._grafana_missing()
        return [self.prometheus.status(), grafana]

    def _grafana_missing(self) -> ComponentStatus:
        return ComponentStatus(
            "grafana",
            False,
            self.grafana.address,
            None,
            False,
            None,
            "not installed (no grafana-server or grafana on PATH): import "
            "deploy/grafana/loopline.json into your own Grafana",
        )


def describe(statuses: list[ComponentStatus]) -> str:
    return "\n".join(s.describe() for s in statuses)
