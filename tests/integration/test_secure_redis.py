"""Redis of the secure stack, for real: TLS only, ACL users, passwords hashed at rest.

One secure redis-server of the test's own (``secure_redis_support``) on a
free port; the shared plaintext stack is left alone.
"""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import model_factory
import pytest
import redis
from features_support import events, expected_store, features_flow, produce_events, stored
from secure_redis_support import SecureRedis, secure_redis
from serving_requests import predict_request
from serving_support import fresh_serving_settings, running_server

from loopline.config.redis import tls_context
from loopline.contracts.redis_layout import WRITE_IF_NEWER, pack
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.security.certs import Pki
from loopline.serving.feature_store import RedisFeatureStore, StoreUnavailableError
from loopline.stack.secure_material import SERVICES
from loopline.streams.features.aggregation import FeatureWrite
from loopline.streams.features.redis_sink import FeatureWriter
from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    with secure_redis(tmp_path_factory.mktemp("secure-redis"), Settings()) as server:
        yield server


def _reply_without_auth(secure: SecureRedis, command: bytes) -> bytes:
    """What the server answers a TLS connection that never authenticated."""
    context = tls_context(secure.redis_settings("serve"))
    assert context is not None
    raw = socket.create_connection(("127.0.0.1", secure.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(command)
        return sock.recv(1024)


def test_the_stack_probes_it_as_admin(secure: SecureRedis) -> None:
    status = secure.server.status()
    assert status.up and status.managed
    assert status.version == secure.server.expected_version()


def test_a_client_without_password_gets_noauth(secure: SecureRedis) -> None:
    assert _reply_without_auth(secure, b"*1\r\n$4\r\nPING\r\n").startswith(b"-NOAUTH")
    assert _reply_without_auth(secure, b"*2\r\n$3\r\nGET\r\n$6\r\nll:f:x\r\n").startswith(
        b"-NOAUTH"
    )
    anonymous = replace(secure.redis_settings("serve"), username="", password_file=None)
    store = RedisFeatureStore.from_settings(anonymous)
    with pytest.raises(StoreUnavailableError, match="NOAUTH"):
        store.mget([b"ll:f:x"], 5.0)
    store.close()


def test_a_plaintext_connection_to_the_tls_port_fails(secure: SecureRedis) -> None:
    plain = redis.Redis(port=secure.port, socket_timeout=5, socket_connect_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain_store = RedisFeatureStore("127.0.0.1", secure.port)
    with pytest.raises(StoreUnavailableError):
        plain_store.mget([b"ll:f:x"], 5.0)


def test_serve_reads_feature_keys_and_can_write_nothing(secure: SecureRedis) -> None:
    admin, serve = secure.client("admin"), secure.client("serve")
    admin.set("ll:f:serve-a", b"1")
    admin.set("ll:fs:serve-set", b"{}")
    admin.set("other:serve-x", b"2")
    assert serve.mget(["ll:f:serve-a", "ll:f:serve-missing"]) == [b"1", None]
    assert serve.get("ll:fs:serve-set") == b"{}"
    for write in (
        lambda: serve.set("ll:f:serve-a", b"9"),
        lambda: serve.delete("ll:f:serve-a"),
        lambda: serve.eval("return 1", 0),
        serve.flushall,
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()
    with pytest.raises(redis.exceptions.NoPermissionError):
        serve.get("other:serve-x")  # outside the feature keys
    assert admin.get("ll:f:serve-a") == b"1"


def test_features_runs_write_if_newer_within_its_prefix_only(secure: SecureRedis) -> None:
    features = secure.client("features")
    writer = FeatureWriter(features, ttl_s=60)
    key = "ll:f:writer:c1"
    new, old = pack(200.0, (5.0,)), pack(100.0, (9.0,))
    assert writer.write([FeatureWrite(key, new, 200.0, 0)]).written == 1
    result = writer.write([FeatureWrite(key, old, 100.0, 0)])
    assert (result.written, result.stale) == (0, 1)
    # The per-key script of the contracts, sent whole (EVAL).
    assert features.eval(WRITE_IF_NEWER, 1, "ll:f:writer:c2", new, 60) == 1
    assert features.get(key) == new
    for outside in (
        lambda: features.set("other:writer", b"1"),
        lambda: features.eval(WRITE_IF_NEWER, 1, "other:writer", new, 60),
        features.flushall,
        lambda: features.config_get("*"),
        lambda: features.keys("*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            outside()


def test_principals_without_a_redis_role_are_refused(secure: SecureRedis) -> None:
    for service in sorted(set(SERVICES) - {"admin", "features", "serve"}):
        with pytest.raises(redis.AuthenticationError):
            secure.client(service).ping()


def test_no_password_in_errors_or_in_the_config(secure: SecureRedis, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-serve-password-42\n")
    settings = replace(secure.redis_settings("serve"), password_file=wrong)
    passwords = [secure.material.password(s) for s in SERVICES] + ["not-the-serve-password-42"]

    with pytest.raises(redis.AuthenticationError) as refused:
        secure.client("serve", password="not-the-serve-password-42").ping()
    store = RedisFeatureStore.from_settings(settings)
    with pytest.raises(StoreUnavailableError) as unavailable:
        store.mget([b"ll:f:x"], 5.0)
    for error in (refused.value, unavailable.value):
        text = f"{error!s} {error!r} {error.__cause__!r}"
        assert "WRONGPASS" in text or "invalid username-password" in text
        assert not any(p in text for p in passwords)
    assert not any(p in repr(secure.client("serve")) for p in passwords)

    conf = secure.server.paths.redis_conf
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    assert "tls-port" in text and "\nport 0\n" in text
    assert not any(p in text for p in passwords)
    assert text.count(" on #") == 3  # admin, features, serve: SHA-256 hashes only


def test_serving_store_reads_over_tls_and_auth(secure: SecureRedis) -> None:
    secure.client("admin").mset({"ll:f:store:a": b"A", "ll:f:store:b": b"B"})
    store = RedisFeatureStore.from_settings(secure.redis_settings("serve"))
    try:
        keys = [b"ll:f:store:a", b"ll:f:store:none", b"ll:f:store:b"]
        assert store.mget(keys, 5.0) == [b"A", None, b"B"]
        assert store.mget(keys, 0.5) == [b"A", None, b"B"]  # the same connection
        # Another thread opens its own TLS connection.
        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(store.mget(keys[:1], 5.0)))
        thread.start()
        thread.join(10)
        assert seen == [[b"A"]]
    finally:
        store.close()


def test_serving_store_timeouts_hold_on_tls(secure: SecureRedis) -> None:
    store = RedisFeatureStore.from_settings(secure.redis_settings("serve"), retry_after_s=0.0)
    admin = secure.client("admin")
    try:
        assert store.mget([b"ll:f:x"], 5.0) == [None]
        admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        with pytest.raises(StoreUnavailableError) as stalled:
            store.mget([b"ll:f:x"], 0.05)
        assert stalled.value.reason == "timeout"
        admin.execute_command("CLIENT", "UNPAUSE")
        assert store.mget([b"ll:f:x"], 5.0) == [None]  # reconnects, TLS and AUTH again
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        store.close()


def test_certificates_from_another_ca_are_refused_both_ways(
    secure: SecureRedis, tmp_path: Path
) -> None:
    other = Pki.create(tmp_path / "other-pki")
    foreign_client = other.issue("client", client=True)
    serve = secure.redis_settings("serve")
    own_client = replace(
        serve, cert_file=secure.material.cert("client"), key_file=secure.material.key("client")
    )
    for settings in (
        replace(serve, ca_file=other.ca_cert),  # the client does not trust the server
        replace(serve, cert_file=foreign_client.cert, key_file=foreign_client.key),
    ):
        store = RedisFeatureStore.from_settings(settings)
        with pytest.raises(StoreUnavailableError) as refused:
            store.mget([b"ll:f:x"], 5.0)
        assert refused.value.reason == "down"
        assert isinstance(refused.value.__cause__, (ssl.SSLError, ConnectionError))
    store = RedisFeatureStore.from_settings(own_client)
    assert store.mget([b"ll:f:x"], 5.0) == [None]
    store.close()


def test_the_features_flow_writes_what_serving_reads(
    isolated_settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    with secure_redis(tmp_path, isolated_settings) as secure:
        sample = events(400, seed=15)
        produce_events(isolated_settings, topics.events, sample)
        expected = expected_store(sample, secure.key_prefix)
        flow = features_flow(
            secure.settings,
            secure.key_prefix,
            tmp_path / "flow.log",
            "--no-recovery",
            extra_env=secure.env("features"),
        )
        admin = secure.client("admin")
        try:
            flow.until(lambda: stored(admin, secure.key_prefix) == expected, "the values")
        finally:
            flow.stop()
        store = RedisFeatureStore.from_settings(secure.redis_settings("serve"))
        keys = sorted(expected)[:50]
        assert store.mget(keys, 5.0) == [expected[k] for k in keys]
        store.close()


def test_a_granted_key_prefix_opens_to_features_and_serve_alike(secure: SecureRedis) -> None:
    features, serve = secure.client("features"), secure.client("serve")
    with pytest.raises(redis.exceptions.NoPermissionError):
        features.set("demo1:f:c1", b"1")
    secure.server.grant_key_prefix("demo1")
    features.set("demo1:f:c1", b"1")
    assert serve.mget(["demo1:f:c1"]) == [b"1"]
    with pytest.raises(redis.exceptions.NoPermissionError):
        serve.set("demo1:f:c1", b"2")
    with pytest.raises(redis.exceptions.NoPermissionError):
        serve.get("demo1:other")  # still feature keys only


def test_the_inference_server_reads_its_features_as_serve(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    with secure_redis(tmp_path, isolated_settings) as secure:
        registry = tmp_path / "registry"
        model_factory.publish(registry)
        # The flow's user writes the features, serving runs as `serve`.
        features = secure.client("features")
        settings = fresh_serving_settings(
            secure.service_settings("serve"), features, f"{secure.key_prefix}:", registry
        )
        with running_server(settings) as server:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            resp = pb_grpc.InferenceStub(channel).Predict(predict_request(), timeout=5)
            channel.close()
        assert {f.status for f in resp.features} == {pb.FEATURE_STATUS_OK}
        assert not resp.degraded
