"""gRPC over TLS, mutual TLS and bearer tokens, against the real server on a free port.

Certificates come from a throw-away CA (``SecureMaterial``): the server's for
127.0.0.1, one client certificate, and the tokens file with ``client``
(infer, read, health) and ``operator`` (admin); each test adds what it needs.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import model_factory
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serving_requests import predict_request
from serving_support import fresh_serving_settings, run_client_script, running_server

from loopline.config.grpc import GrpcClient, grpc_client
from loopline.contracts.settings import Settings
from loopline.oip import grpc_predict_v2_pb2 as oip_pb
from loopline.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from loopline.security.certs import Pki
from loopline.security.tokens import add_token, revoke_token
from loopline.serving.supervisor import Supervisor
from loopline.stack.secure_material import SecureMaterial
from loopline.v1 import inference_pb2_grpc as v1_grpc

Code = grpc.StatusCode


@pytest.fixture
def material(tmp_path: Path) -> SecureMaterial:
    return SecureMaterial.create(tmp_path / "secure")


@pytest.fixture
def base(isolated_settings, redis_client, redis_prefix, tmp_path) -> Settings:
    model_factory.publish(tmp_path / "reg")
    return fresh_serving_settings(isolated_settings, redis_client, redis_prefix, tmp_path / "reg")


def secured(base: Settings, m: SecureMaterial, **serving: Any) -> Settings:
    """``base`` serving over TLS (the material's server certificate) with its tokens file."""
    conf = {
        "tls_cert_file": m.cert("grpc"),
        "tls_key_file": m.key("grpc"),
        "tokens_file": m.tokens_file,
        **serving,
    }
    return replace(base, serving=replace(base.serving, **conf))


def client_of(server: Any, m: SecureMaterial, token: str | None = None, **conf: Any) -> GrpcClient:
    """Loopline's own client of ``server``: TLS trusting the material's CA, ``token`` sent."""
    token_file = None
    if token is not None:
        token_file = m.root / f"{abs(hash(token))}.token"
        token_file.write_text(token + "\n")
    conf = {"ca_file": m.ca, "token_file": token_file, **conf}
    serving = replace(server.settings.serving, port=server.port, **conf)
    return grpc_client(serving)


def call(client: GrpcClient, method: str = "predict") -> Any:
    """One fresh connection, one call; the RpcError's code, or "OK"."""
    with client.channel(options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            if method == "predict":
                v1_grpc.InferenceStub(channel).Predict(
                    predict_request(), timeout=10, metadata=client.metadata
                )
            elif method == "health":
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10, metadata=client.metadata
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            elif method == "metadata":
                oip_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                    oip_pb.ModelMetadataRequest(name="fraud"), timeout=10, metadata=client.metadata
                )
            elif method == "reflection":
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                replies = stub.ServerReflectionInfo(
                    iter([request]), timeout=10, metadata=client.metadata
                )
                assert next(iter(replies)).list_services_response.service
            else:
                raise AssertionError(method)
        except grpc.RpcError as e:
            return e.code(), e.details()
    return "OK"


def code_of(result: Any) -> Any:
    return result if result == "OK" else result[0]


def token_of(m: SecureMaterial, name: str) -> str:
    return m.token_file(name).read_text().strip()


def test_a_tls_server_refuses_plaintext_and_accepts_tls(base, material) -> None:
    with running_server(secured(base, material)) as server:
        plaintext = grpc_client(replace(server.settings.serving, port=server.port))
        assert not plaintext.secure
        assert code_of(call(plaintext, "health")) == Code.UNAVAILABLE
        assert call(client_of(server, material), "health") == "OK"
        assert call(client_of(server, material, token_of(material, "client"))) == "OK"


def test_tokens_decide_who_calls_what(base, material) -> None:
    reader = add_token(material.tokens_file, "reader", ("read",))
    with running_server(secured(base, material)) as server:
        no_token = call(client_of(server, material))
        assert no_token[0] == Code.UNAUTHENTICATED and "Bearer" in no_token[1]
        wrong = "ll_" + "x" * 43
        refused = call(client_of(server, material, wrong))
        assert refused[0] == Code.UNAUTHENTICATED and wrong not in refused[1]
        denied = call(client_of(server, material, reader))
        assert denied[0] == Code.PERMISSION_DENIED
        assert "'infer'" in denied[1] and reader not in denied[1]
        assert call(client_of(server, material, reader), "metadata") == "OK"
        assert call(client_of(server, material), "metadata")[0] == Code.UNAUTHENTICATED
        # Health is open by default (probes carry no token).
        assert call(client_of(server, material), "health") == "OK"
        # Reflection (a streaming RPC) is the operator's only.
        client = client_of(server, material, token_of(material, "client"))
        assert code_of(call(client, "reflection")) == Code.PERMISSION_DENIED
        assert call(client_of(server, material, token_of(material, "operator")), "reflection") == (
            "OK"
        )
        refusals = server.metrics.registry.get_sample_value(
            "loopline_serving_auth_refusals_total",
            {"method": "Predict", "code": "UNAUTHENTICATED"},
        )
        assert refusals == 2


def test_health_needs_a_token_when_not_open(base, material) -> None:
    with running_server(secured(base, material, open_health=False)) as server:
        assert code_of(call(client_of(server, material), "health")) == Code.UNAUTHENTICATED
        assert call(client_of(server, material, token_of(material, "client")), "health") == "OK"


def _until(client: GrpcClient, expected: Any, timeout_s: float = 5.0) -> float:
    """Seconds until a call's outcome is ``expected``."""
    t0 = time.monotonic()
    while code_of(call(client)) != expected:
        assert time.monotonic() - t0 < timeout_s, f"not {expected} after {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - t0


def test_tokens_added_and_revoked_while_serving(base, material) -> None:
    with running_server(secured(base, material)) as server:
        call(client_of(server, material, token_of(material, "client")))  # the file is read
        late = add_token(material.tokens_file, "late", ("infer",))
        assert _until(client_of(server, material, late), "OK") < 2.5
        assert revoke_token(material.tokens_file, "late")
        assert _until(client_of(server, material, late), Code.UNAUTHENTICATED) < 2.5
        # A broken file while serving keeps the last good tokens.
        material.tokens_file.write_text(material.tokens_file.read_text() + "garbage\n")
        time.sleep(1.2)
        assert call(client_of(server, material, token_of(material, "client"))) == "OK"


def test_mutual_tls_checks_the_client_certificate(base, material, tmp_path) -> None:
    other = Pki.create(tmp_path / "other-ca").issue("client", client=True)
    token = token_of(material, "client")
    with running_server(secured(base, material, client_ca_file=material.ca)) as server:
        assert code_of(call(client_of(server, material, token))) == Code.UNAVAILABLE
        foreign = {"client_cert_file": other.cert, "client_key_file": other.key}
        assert code_of(call(client_of(server, material, token, **foreign))) == Code.UNAVAILABLE
        own = {
            "client_cert_file": material.cert("client"),
            "client_key_file": material.key("client"),
        }
        assert call(client_of(server, material, token, **own)) == "OK"


def test_a_rotated_certificate_is_served_without_restart(base, material, tmp_path) -> None:
    new_ca = Pki.create(tmp_path / "new-ca")
    issued = new_ca.issue("grpc", hosts=("127.0.0.1", "localhost"))
    token = token_of(material, "client")
    with running_server(secured(base, material)) as server:
        assert call(client_of(server, material, token)) == "OK"
        # Key first, then certificate: the half-way state keeps the old pair.
        shutil.copyfile(issued.key, material.key("grpc"))
        assert call(client_of(server, material, token)) == "OK"
        shutil.copyfile(issued.cert, material.cert("grpc"))
        trusting_new = client_of(server, material, token, ca_file=new_ca.ca_cert)
        assert call(trusting_new) == "OK"
        assert code_of(call(client_of(server, material, token))) == Code.UNAVAILABLE


TRITON = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    url, ca, token, rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    c = tc.InferenceServerClient(url, ssl=True, root_certificates=ca)
    headers = {"authorization": f"Bearer {token}"}
    x = tc.InferInput("input", [len(rows), len(rows[0])], "FP32")
    x.set_data_from_numpy(np.array(rows, dtype=np.float32))
    out = {"ready": c.is_model_ready("fraud", headers=headers)}
    res = c.infer("fraud", [x], headers=headers)
    out["probabilities"] = res.as_numpy("probabilities").tolist()
    try:
        c.infer("fraud", [x])
        out["no_token"] = "accepted"
    except InferenceServerException as e:
        out["no_token"] = e.status()
    print(json.dumps(out))
    """
)


def test_tritonclient_over_tls_with_a_token_header(base, material) -> None:
    with running_server(secured(base, material)) as server:
        model = server.slot.current
        rows = model.manifest.golden_inputs[:2]
        argv = [f"127.0.0.1:{server.port}", str(material.ca), token_of(material, "client")]
        out = run_client_script(TRITON, *argv, json.dumps(rows))
    assert out["ready"] is True
    assert [p[1] for p in out["probabilities"]] == pytest.approx(
        model.manifest.golden_scores[:2], abs=1e-5
    )
    assert out["no_token"] == "StatusCode.UNAUTHENTICATED"


def test_several_worker_processes_serve_tls_and_tokens(base, material) -> None:
    settings = secured(base, material)
    settings = replace(settings, serving=replace(settings.serving, processes=2, metrics_port=-1))
    stop, ready = threading.Event(), threading.Event()
    lines: list[str] = []
    supervisor = Supervisor(settings)

    def on_ready(line: str) -> None:
        lines.append(line)
        ready.set()

    thread = threading.Thread(target=supervisor.run, args=(stop, on_ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(120), "the workers did not start"
        assert "(2 processes, TLS + tokens)" in lines[0]
        port = int(lines[0].split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
        serving = replace(settings.serving, port=port, ca_file=material.ca)
        anonymous = grpc_client(serving)
        token_file = material.token_file("client")
        with_token = grpc_client(replace(serving, token_file=token_file))
        # Fresh connections land on either worker; each checks TLS and tokens.
        for _ in range(6):
            assert code_of(call(anonymous)) == Code.UNAUTHENTICATED
            assert call(with_token) == "OK"
    finally:
        stop.set()
        thread.join(60)
