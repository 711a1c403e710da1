"""The shared registry on a real S3 API server (moto's standalone server stands in for S3).

Conditional puts (``If-None-Match: *`` to claim a version number,
``If-Match: <etag>`` to move an alias) are decided by the server, so these
tests run several hosts' clients at once and check nothing is lost or torn.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import boto3
import pytest
from polling import wait_until

from loopline.contracts.errors import IntegrityError
from loopline.contracts.settings import RegistrySettings
from loopline.registry.backend import open_registry
from loopline.registry.manifest import ManifestFields
from loopline.registry.shared import SharedRegistry
from loopline.rollout.plan import RolloutPlan
from loopline.stack.component import port_open
from loopline.stack.ports import free_port

pytestmark = pytest.mark.integration
FIELDS = ManifestFields("fraud", "f" * 64, ["a"])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free loopback port, with a bucket ``registry``."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: port_open("127.0.0.1", port), 30, lambda: log.read_text()[-2000:])
        endpoint = f"http://127.0.0.1:{port}"
        with pytest.MonkeyPatch.context() as mp:
            for name, value in (
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
            ):
                mp.setenv(name, value)
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="registry")
            yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def host(endpoint: str, prefix: str) -> SharedRegistry:
    settings = RegistrySettings(
        backend="fsspec", uri=f"s3://registry/{prefix}", endpoint_url=endpoint
    )
    reg = open_registry(settings)
    assert isinstance(reg, SharedRegistry)
    return reg


def test_many_hosts_publish_and_move_aliases_on_s3(s3_endpoint: str) -> None:
    published: list[tuple[str, bytes]] = []
    torn: list[str] = []
    done = threading.Event()

    def publisher(i: int) -> None:
        reg = host(s3_endpoint, "many")
        for j in range(2):
            data = f"model {i}.{j}".encode()
            version = reg.publish("fraud", data, FIELDS).manifest.version
            published.append((version, data))
            reg.set_alias("fraud", "champion", version)

    def reader() -> None:
        # Whatever a reader lists or resolves meanwhile is whole: its bytes verify.
        reg = host(s3_endpoint, "many")
        while not done.is_set():
            try:
                for mv in reg.versions("fraud"):
                    mv.read_verified()
                champion = reg.resolve("fraud", "champion")
                if champion is not None:
                    champion.read_verified()
            except IntegrityError as e:
                torn.append(str(e))
            done.wait(0.02)

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(3)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not torn
    assert sorted(int(v) for v, _ in published) == list(range(1, 7))
    reg = host(s3_endpoint, "many")
    for version, data in published:
        assert reg.get("fraud", version).read_verified() == data
    # Every alias move was recorded: six moves, none lost to a concurrent writer.
    assert sorted(reg.alias_history("fraud", "champion")) == sorted(v for v, _ in published)
    assert reg.rollback("fraud") == reg.alias_history("fraud", "champion")[-1]


def test_a_rollout_ends_once_on_s3(s3_endpoint: str) -> None:
    reg = host(s3_endpoint, "rollout")
    for data in (b"one", b"two"):
        reg.publish("fraud", data, FIELDS)
    reg.set_alias("fraud", "champion", "1")
    reg.start_rollout(
        RolloutPlan.start("fraud", candidate="2", champion="1", mode="canary", plan_id="p")
    )
    ends: list[object] = []
    deciders = [
        threading.Thread(
            target=lambda s=s: ends.append(
                host(s3_endpoint, "rollout").finish_rollout("fraud", "p", s, "x")
            )
        )
        for s in ("promoted", "aborted", "promoted", "aborted")
    ]
    for t in deciders:
        t.start()
    for t in deciders:
        t.join()
    winners = [e for e in ends if e is not None]
    assert len(winners) == 1
    assert reg.rollout("fraud") == winners[0]
    expected = {"champion": "2"} if winners[0].state == "promoted" else {"champion": "1"}
    assert reg.aliases("fraud") == expected
