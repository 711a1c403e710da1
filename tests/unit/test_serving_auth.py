"""Token auth (the role table, the interceptor's decisions), TLS files, client channels,
and ``loopline token``: without a server (tests/integration/test_secure_grpc.py has one)."""

from __future__ import annotations

import argparse
import shutil
from collections import namedtuple
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from loopline.config.grpc import grpc_client
from loopline.contracts.errors import ConfigError, LooplineError
from loopline.contracts.settings import ServingSettings
from loopline.oip import grpc_predict_v2_pb2 as oip_pb
from loopline.security import commands
from loopline.security.certs import Pki
from loopline.security.tokens import add_token
from loopline.serving import auth, tls
from loopline.v1 import inference_pb2 as v1_pb

Details = namedtuple("Details", "method invocation_metadata")
PREDICT = "/loopline.v1.Inference/Predict"


def test_every_rpc_of_every_service_has_a_role() -> None:
    services = [
        v1_pb.DESCRIPTOR.services_by_name["Inference"],
        oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ]
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    health_methods = {m.name for m in services[2].methods}
    assert methods <= set(auth.ROLE_OF)
    assert auth.ROLE_OF["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] == "admin"
    by_role = {
        role: sorted(m.rsplit("/", 1)[1] for m, r in auth.ROLE_OF.items() if r == role)
        for role in ("health", "read", "infer")
    }
    assert by_role == {
        "health": sorted({"Check", "ServerLive", "Watch"} | health_methods),
        "read": ["ModelMetadata", "ModelReady", "ServerMetadata", "ServerReady"],
        "infer": ["ModelInfer", "Predict", "PredictBatch"],
    }


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), None),
        ((("authorization", "Bearer ll_abc"),), "ll_abc"),
        ((("x", "y"), ("authorization", "bearer  ll_abc ")), "ll_abc"),
        ((("authorization", "Basic dXNlcg=="),), ""),
        ((("authorization", "ll_abc"),), ""),
    ],
)
def test_bearer_reads_the_authorization_metadata(metadata: Any, expected: Any) -> None:
    assert auth.bearer(metadata) == expected


class AbortedError(Exception):
    pass


class Context:
    """What a refusal handler needs of a ServicerContext: abort."""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AbortedError(code, details)


def _ok(request: Any, context: Any) -> str:
    return "ok"


@pytest.fixture
def interceptor(tmp_path: Path) -> Any:
    path = tmp_path / "tokens"
    tokens = {
        "reader": add_token(path, "reader", ("read",)),
        "api": add_token(path, "api", ("infer", "read")),
        "ops": add_token(path, "ops", ("admin",)),
    }
    registry = CollectorRegistry()
    conf = ServingSettings(tokens_file=path)
    (interceptor,) = auth.interceptors(conf, registry)
    return interceptor, tokens, registry


def _decide(interceptor: Any, method: str, token: str | None) -> Any:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    handler = interceptor.intercept_service(
        lambda _details: grpc.unary_unary_rpc_method_handler(_ok), Details(method, metadata)
    )
    try:
        return handler.unary_unary(None, Context())
    except AbortedError as e:
        return e.args


def test_the_interceptor_answers_by_token_and_role(interceptor) -> None:
    it, tokens, registry = interceptor
    assert _decide(it, PREDICT, tokens["api"]) == "ok"
    assert _decide(it, PREDICT, tokens["ops"]) == "ok"
    code, message = _decide(it, PREDICT, tokens["reader"])
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "'infer'" in message and "--roles infer" in message and tokens["reader"] not in message
    assert _decide(it, PREDICT, None)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _decide(it, PREDICT, "ll_nope")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert "ll_nope" not in _decide(it, PREDICT, "ll_nope")[1]
    assert _decide(it, "/grpc.health.v1.Health/Check", None) == "ok"
    assert _decide(it, "/no.Such/Method", tokens["api"])[0] == grpc.StatusCode.PERMISSION_DENIED
    sample = registry.get_sample_value
    refused = {"method": "Predict", "code": "UNAUTHENTICATED"}
    assert sample("loopline_serving_auth_refusals_total", refused) == 3
    unknown = {"method": "unknown", "code": "PERMISSION_DENIED"}
    assert sample("loopline_serving_auth_refusals_total", unknown) == 1


def test_closed_health_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    add_token(path, "api", ("infer",))
    (it,) = auth.interceptors(
        ServingSettings(tokens_file=path, open_health=False), CollectorRegistry()
    )
    assert _decide(it, "/grpc.health.v1.Health/Check", None)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_no_tokens_file_installs_no_interceptor(tmp_path: Path) -> None:
    assert auth.interceptors(ServingSettings(), CollectorRegistry()) == ()
    with pytest.raises(ConfigError, match="loopline token add"):
        auth.interceptors(ServingSettings(tokens_file=tmp_path / "absent"), CollectorRegistry())


def test_a_refusal_keeps_the_streaming_shape_of_the_method() -> None:
    stream = grpc.stream_stream_rpc_method_handler(_ok)
    refused = auth.refusal(stream, grpc.StatusCode.UNAUTHENTICATED, "no")
    assert refused.request_streaming and refused.response_streaming
    with pytest.raises(AbortedError):
        refused.stream_stream(iter(()), Context())


# -- TLS files --------------------------------------------------------------------------
@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "ca")


def test_certificate_files_reload_only_a_matching_pair(pki: Pki, tmp_path: Path) -> None:
    first = pki.issue("grpc", hosts=("127.0.0.1",))
    files = tls.CertificateFiles(first.cert, first.key, None)
    assert files.fetch() is None  # unchanged
    second = Pki.create(tmp_path / "other").issue("grpc2", hosts=("127.0.0.1",))
    shutil.copyfile(second.cert, first.cert)
    assert files.fetch() is None  # the old key beside the new certificate: keep the old pair
    shutil.copyfile(second.key, first.key)
    assert files.fetch() is not None
    assert files.fetch() is None


def test_server_credentials_name_what_is_missing(pki: Pki) -> None:
    issued = pki.issue("grpc", hosts=("127.0.0.1",))
    assert tls.server_credentials(ServingSettings()) is None
    with pytest.raises(ConfigError, match=r"both serving\.tls_cert_file"):
        tls.server_credentials(ServingSettings(tls_cert_file=issued.cert))
    with pytest.raises(ConfigError, match="client_ca_file needs"):
        tls.server_credentials(ServingSettings(client_ca_file=pki.ca_cert))
    with pytest.raises(ConfigError, match="is not the key of"):
        other = pki.issue("other", hosts=("127.0.0.1",))
        tls.server_credentials(ServingSettings(tls_cert_file=issued.cert, tls_key_file=other.key))
    conf = ServingSettings(tls_cert_file=issued.cert, tls_key_file=issued.key)
    assert tls.server_credentials(conf) is not None
    assert tls.describe(conf) == "TLS"
    assert tls.describe(replace(conf, client_ca_file=pki.ca_cert, tokens_file=Path("t"))) == (
        "mutual TLS + tokens"
    )


# -- the client side --------------------------------------------------------------------
def test_grpc_client_reads_the_ca_and_the_token(pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "client.token"
    token_file.write_text("ll_secret\n")
    client = grpc_client(ServingSettings(port=7, ca_file=pki.ca_cert, token_file=token_file))
    assert client.secure and client.address == "127.0.0.1:7"
    assert client.metadata == (("authorization", "Bearer ll_secret"),)
    with pytest.raises(ConfigError, match=r"serving\.token_file") as e:
        grpc_client(ServingSettings(token_file=tmp_path / "absent"))
    assert "ll_secret" not in str(e.value)
    with pytest.raises(ConfigError, match="client_key_file"):
        grpc_client(ServingSettings(ca_file=pki.ca_cert, client_cert_file=pki.ca_cert))


# -- loopline token ---------------------------------------------------------------------
def _token(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="loopline")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["token", *argv])
    return int(args.func(args))


def test_token_commands_add_list_revoke(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "secrets" / "tokens"
    assert _token("add", "fraud-api", "--roles", "infer,read", "--file", str(path)) == 0
    out = capsys.readouterr().out
    token = out.splitlines()[2]
    assert token.startswith("ll_") and str(path) in out and token not in path.read_text()
    assert _token("list", "--file", str(path)) == 0
    listed = capsys.readouterr().out
    assert listed == "fraud-api\tread,infer\n" and token not in listed
    assert _token("revoke", "fraud-api", "--file", str(path)) == 0
    with pytest.raises(LooplineError, match="no token named 'fraud-api'"):
        _token("revoke", "fraud-api", "--file", str(path))
    with pytest.raises(LooplineError, match="choose from"):
        _token("add", "x", "--roles", "root", "--file", str(path))
    with pytest.raises(LooplineError, match=r"--file PATH or set serving\.tokens_file"):
        _token("list")


def test_a_tokens_file_broken_while_serving_keeps_the_last_good_tokens(tmp_path: Path) -> None:
    from loopline.security.tokens import TokenStore, add_token

    path = tmp_path / "tokens"
    token = add_token(path, "api", ("infer",))
    now = [0.0]
    store = TokenStore(path, clock=lambda: now[0])
    path.write_text("api infer sha256:not-hex\n")  # half-written / a typo
    now[0] += 2.0
    assert store.roles_of(token) == frozenset({"infer"})
    path.unlink()
    now[0] += 2.0
    assert store.roles_of(token) == frozenset({"infer"})
    revoked_fresh = add_token(path, "other", ("read",))  # a good file again: re-read
    now[0] += 2.0
    assert store.roles_of(token) is None
    assert store.roles_of(revoked_fresh) == frozenset({"read"})
