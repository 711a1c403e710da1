"""deploy/k8s: every overlay renders, matches the Kubernetes schemas, and keeps
the promises its comments make (non-root, probes, grace, ordinals, secrets).

No cluster and no socket: the overlays are rendered by tests/k8s_render.py
(and must equal what ``kubectl kustomize`` rendered, recorded under
tests/k8s_rendered/) and validated against the official schemas that
kubernetes-validate bundles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from containerfile_lint import Instruction, instructions, problems
from k8s_render import K8S, OVERLAYS, Manifest, find, load_documents, pod_spec, render

from loopline.cli import build_parser
from loopline.config.loader import load_settings
from loopline.contracts.metric_names.serving import SERVING_IN_FLIGHT
from loopline.contracts.settings import Settings

# Native gRPC probes are GA from 1.27, the pod-index label from 1.28 (beta, on).
OLDEST_KUBERNETES = "1.28.0"
SETTINGS_PATH = "/etc/loopline/settings/settings.yaml"
RENDERED = Path(__file__).resolve().parents[1] / "k8s_rendered"
# The settings section holding each workload's metrics port.
METRICS_SECTION = {"serving": "serving", "features": "streams", "labels": "labels",
                   "drift": "drift", "trainer": "trainer", "policy": "policy",
                   "rollout": "rollout"}  # fmt: skip


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> list[Manifest]:
    return render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = find(load_documents(K8S / "base" / "settings.yaml"), "ConfigMap", "loopline-settings")
    path = tmp_path_factory.mktemp("k8s") / "settings.yaml"
    path.write_text(config["data"]["settings.yaml"])
    return path


@pytest.fixture(scope="module")
def settings(settings_file: Path) -> Settings:
    """What serving runs with (the settings every pod shares, and its login)."""
    serving = find(render(K8S / "base"), "Deployment", "serving")
    return load_settings(settings_file, env=loopline_env(serving))


def workloads(docs: list[Manifest]) -> list[Manifest]:
    return [d for d in docs if pod_spec(d) is not None]


def container(doc: Manifest) -> dict[str, Any]:
    spec = pod_spec(doc)
    assert spec is not None and len(spec["containers"]) == 1, doc["metadata"]["name"]
    return spec["containers"][0]


def env_of(doc: Manifest) -> dict[str, Any]:
    return {e["name"]: e for e in container(doc).get("env", [])}


def loopline_env(doc: Manifest) -> dict[str, str]:
    return {k: v["value"] for k, v in env_of(doc).items() if k.startswith("LOOPLINE_")}


def port(doc: Manifest, name: str) -> int:
    return next(p["containerPort"] for p in container(doc)["ports"] if p["name"] == name)


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_renderer_agrees_with_kustomize(name: str) -> None:
    """The overlay as ``kubectl kustomize`` rendered it (v5.5.0). After changing a
    manifest, record it again: ``kubectl kustomize deploy/k8s/overlays/NAME >
    tests/k8s_rendered/NAME.yaml`` (this fails until someone does)."""
    recorded = (RENDERED / f"{name}.yaml").read_text()
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(recorded) if d}
    rendered = render(K8S / "overlays" / name)
    assert by_key == {(d["kind"], d["metadata"]["name"]): d for d in rendered}


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_every_manifest_matches_the_kubernetes_schemas(version: str) -> None:
    docs = [d for name in OVERLAYS for d in render(K8S / "overlays" / name)]
    docs += load_documents(K8S / "secrets.example.yaml")
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any mismatch


def test_every_container_is_non_root_read_only_and_sized(overlay: list[Manifest]) -> None:
    for doc in workloads(overlay):
        spec = pod_spec(doc)
        assert spec is not None
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == "loopline"
        box = container(doc)["securityContext"]
        assert box["readOnlyRootFilesystem"] is True
        assert box["allowPrivilegeEscalation"] is False
        assert box["capabilities"]["drop"] == ["ALL"]
        resources = container(doc)["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), doc["metadata"]["name"]
        assert "memory" in resources["limits"], doc["metadata"]["name"]
        mounts = {m["mountPath"] for m in container(doc)["volumeMounts"]}
        assert "/tmp" in mounts  # the only scratch space on a read-only root


def test_every_service_runs_from_the_settings_file(
    overlay: list[Manifest], settings_file: Path
) -> None:
    parser = build_parser()
    for doc in workloads(overlay):
        # Unknown keys, or a login without its principal, raise here.
        load_settings(settings_file, env=loopline_env(doc))
        args = container(doc)["args"]
        assert args[:2] == ["--config", SETTINGS_PATH]
        # $(VAR) is expanded by the kubelet; any value of the right type parses.
        parsed = parser.parse_args([a.replace("$(POD_INDEX)", "0") for a in args])
        assert parsed.config == SETTINGS_PATH
        assert any(m["mountPath"] == str(Path(SETTINGS_PATH).parent)
                   for m in container(doc)["volumeMounts"])  # fmt: skip


def test_metrics_ports_are_scraped_where_the_settings_serve_them(
    overlay: list[Manifest], settings: Settings
) -> None:
    for doc in workloads(overlay):
        name = doc["metadata"]["name"]
        expected = getattr(settings, METRICS_SECTION[name]).metrics_port
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == expected == port(doc, "metrics")


def test_serving_probes_the_health_service_over_grpc(
    overlay: list[Manifest], settings: Settings
) -> None:
    serving = find(overlay, "Deployment", "serving")
    grpc_port = port(serving, "grpc")
    assert grpc_port == settings.serving.port
    assert container(serving)["readinessProbe"]["grpc"]["port"] == grpc_port
    # Liveness must not hang on a model existing (health is NOT_SERVING until then).
    assert container(serving)["livenessProbe"]["tcpSocket"]["port"] == grpc_port
    assert settings.serving.open_health  # the kubelet sends no token
    assert settings.serving.tls_cert_file is None  # the kubelet's gRPC probe has no TLS


def test_serving_grace_period_covers_its_shutdown(
    overlay: list[Manifest], settings: Settings
) -> None:
    serving = find(overlay, "Deployment", "serving")
    sleep = container(serving)["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    conf = settings.serving
    # Drain, in-flight calls, then the prediction log's flush (up to the grace again).
    shutdown = float(sleep[1]) + conf.shutdown_drain_s + 2 * conf.shutdown_grace_s
    assert pod_spec(serving)["terminationGracePeriodSeconds"] > shutdown  # type: ignore[index]


def test_serving_scales_on_cpu_and_calls_in_flight(overlay: list[Manifest]) -> None:
    serving = find(overlay, "Deployment", "serving")
    hpa = find(overlay, "HorizontalPodAutoscaler", "serving")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "serving"
    }  # fmt: skip
    assert hpa["spec"]["minReplicas"] == serving["spec"]["replicas"]
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    in_flight = by_type["Pods"]["pods"]["metric"]["name"]
    # prometheus-adapter serves the gauge serving really exports, under its own name.
    rule = yaml.safe_load((K8S / "prometheus-adapter.yaml").read_text())["rules"]["custom"][0]
    assert rule["name"]["as"] == in_flight == SERVING_IN_FLIGHT.name
    series = rule["name"]["matches"].strip("^$")
    assert series in SERVING_IN_FLIGHT.exposed()
    assert series in rule["seriesQuery"] and "<<.Series>>" in rule["metricsQuery"]
    pdb = find(overlay, "PodDisruptionBudget", "serving")
    labels = serving["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_dataflow_ordinals_are_bytewax_process_ids(
    overlay: list[Manifest], settings: Settings
) -> None:
    flows = [d for d in overlay if d["kind"] == "StatefulSet"]
    assert {d["metadata"]["name"] for d in flows} == {"features", "labels", "drift"}
    for flow in flows:
        name, spec = flow["metadata"]["name"], flow["spec"]
        env = env_of(flow)
        field = env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.labels['apps.kubernetes.io/pod-index']"
        args = container(flow)["args"]
        assert args[args.index("--process-id") + 1] == "$(POD_INDEX)"
        assert args[args.index("--addresses") + 1] == "$(CLUSTER_ADDRESSES)"
        service = find(overlay, "Service", spec["serviceName"])
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        cluster_port = port(flow, "cluster")
        assert service["spec"]["ports"][0]["port"] == cluster_port
        addresses = env["CLUSTER_ADDRESSES"]["value"].split(";")
        assert addresses == [
            f"{name}-{i}.{spec['serviceName']}:{cluster_port}" for i in range(spec["replicas"])
        ]
        assert spec["podManagementPolicy"] == "Parallel"
        recovery = mounted_volume(flow, str(settings.streams.recovery_dir))
        claim = find(
            overlay, "PersistentVolumeClaim", recovery["persistentVolumeClaim"]["claimName"]
        )
        # One set of partitions per flow, opened by every process of its cluster.
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def mounted_volume(doc: Manifest, path: str) -> dict[str, Any]:
    mount = next(m for m in container(doc)["volumeMounts"] if m["mountPath"] == path)
    spec = pod_spec(doc)
    assert spec is not None
    return next(v for v in spec["volumes"] if v["name"] == mount["name"])


def test_shared_paths_live_on_the_shared_volume(
    overlay: list[Manifest], settings: Settings
) -> None:
    shared = "/var/lib/loopline/shared"
    for path in (
        settings.registry.path,
        settings.trainer.offline_store,
        settings.trainer.state_dir,
    ):
        assert str(path).startswith(shared + "/")
    for name in ("serving", "trainer", "rollout", "labels"):
        doc = next(d for d in workloads(overlay) if d["metadata"]["name"] == name)
        claim = mounted_volume(doc, shared)["persistentVolumeClaim"]["claimName"]
        access = find(overlay, "PersistentVolumeClaim", claim)["spec"]["accessModes"]
        assert access == ["ReadWriteMany"]


def test_every_secret_is_a_mounted_file_the_settings_point_at(
    overlay: list[Manifest], settings: Settings
) -> None:
    known = {
        d["metadata"]["name"]: set(d["stringData"])
        for d in load_documents(K8S / "secrets.example.yaml")
    }
    assert not any(d["kind"] == "Secret" for d in overlay)  # never applied over real ones
    for doc in workloads(overlay):
        for variable in container(doc).get("env", []):
            assert "secretKeyRef" not in variable.get("valueFrom", {}), variable["name"]
        files = secret_files(doc, known)
        # Kafka (every service) and the pod's own login: its principal's password.
        assert str(settings.kafka.sasl_password_file) in files
        assert str(settings.kafka.ssl_ca_file) in files
        principal = env_of(doc)["LOOPLINE_KAFKA__SASL_USERNAME"]["value"]
        login = mounted_volume(doc, str(Path(settings.kafka.sasl_password_file).parent))
        assert login["secret"]["secretName"] == f"loopline-login-{principal}"
    serving = secret_files(find(overlay, "Deployment", "serving"), known)
    assert {str(settings.serving.tokens_file), str(settings.registry.signing_key_file)} <= serving
    trainer = secret_files(find(overlay, "Deployment", "trainer"), known)
    assert str(settings.registry.signing_key_file) in trainer


def secret_files(doc: Manifest, known: dict[str, set[str]]) -> set[str]:
    """Every file path the pod sees from a Secret (each Secret listed in the example)."""
    spec = pod_spec(doc)
    assert spec is not None
    volumes = {v["name"]: v for v in spec["volumes"]}
    files = set()
    for mount in container(doc)["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert secret["secretName"] in known, secret["secretName"]
        assert mount.get("readOnly") is True and "subPath" not in mount  # rotation reaches pods
        files |= {f"{mount['mountPath']}/{key}" for key in known[secret["secretName"]]}
    return files


def test_the_containerfile_follows_the_image_rules() -> None:
    source = (K8S.parent / "Containerfile").read_text()
    assert problems(source) == []
    steps = instructions(source)
    assert steps[-1] == Instruction("CMD", '["--help"]')
    assert Instruction("ENTRYPOINT", '["loopline"]') in steps
    user = next(s.text for s in reversed(steps) if s.keyword == "USER")
    uids = {d["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            for d in workloads(render(K8S / "base"))}  # fmt: skip
    assert uids == {int(user.split(":")[0])}  # the manifests run as the image's user


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        ("FROM python:latest\nUSER 1\nENTRYPOINT [\"x\"]\n", "not multi-stage"),
        ("FROM python:3.11 AS b\nFROM python:3.11.13-slim\nCOPY --from=b /a /a\nUSER 1\n",
         "FROM python:3.11: pin"),
        ("FROM a:1.2.3 AS b\nFROM a:1.2.3\nCOPY --from=b /a /a\n", "runs as root"),
        ("FROM a:1.2.3 AS b\nFROM a:1.2.3\nCOPY --from=b /a /a\nUSER root\n", "runs as root"),
        ("FROM a:1.2.3 AS b\nFROM a:1.2.3\nADD https://x/y /y\nCOPY --from=b /a /a\nUSER 1\n",
         "never ADD a URL"),
        ("FROM a:1.2.3 AS b\nFROM a:1.2.3\nRUN apt-get install -y \\\n    gcc\n"
         "COPY --from=b /a /a\nUSER 1\n", "build tool gcc"),
    ],
)  # fmt: skip
def test_the_containerfile_rules_catch_what_they_name(broken: str, complaint: str) -> None:
    assert any(complaint in p for p in problems(broken)), problems(broken)
