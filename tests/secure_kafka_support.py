"""A secure Kafka broker of its own for tests (SASL_SSL, SCRAM logins, ACLs).

:func:`secure_broker` makes the secure stack's material in a temp dir, starts a
broker on free ports in its own state dir (the session stack's jars linked
in, so no Maven run), creates Loopline's topics under a unique prefix with
every service's ACLs, and stops the broker afterwards. The shared plaintext
stack is never touched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from loopline.config.loader import apply_layers
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import project_of
from loopline.stack import Stack
from loopline.stack.kafka import KafkaBroker
from loopline.stack.kafka_acls import apply_acls
from loopline.stack.paths import StackPaths
from loopline.stack.ports import free_port
from loopline.stack.secure_material import SERVICES, SecureMaterial
from loopline.stack.topics_admin import ensure_topics


@dataclass(frozen=True)
class SecureBroker:
    """A running secure broker: its material, topics and each principal's settings."""

    base: Settings
    material: SecureMaterial
    paths: StackPaths
    topics: Topics
    # How long `up` took: storage formatting, JVM start, the service logins.
    started_in_s: float

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.base.stack.kafka_port}"

    def settings_of(self, service: str) -> Settings:
        """Settings logging in as ``service`` (one of secure_material.SERVICES)."""
        return apply_layers(
            self.base, self.material.settings(service, kafka_port=self.base.stack.kafka_port)
        )

    def ssl_settings_of(self, service: str) -> Settings:
        """Settings logging in with ``service``'s client certificate (the SSL listener)."""
        kafka = self.material.kafka_ssl(service, self.base.stack.kafka_ssl_port)
        return apply_layers(self.base, {"kafka": kafka})

    def passwords(self) -> list[str]:
        return [self.material.password(s) for s in SERVICES]

    def logs(self) -> str:
        """Everything the broker and its storage formatting wrote."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.paths.logs.glob("*")))


def _link_jars(session: Settings, paths: StackPaths) -> None:
    """The session stack's jars, fetched there once per machine."""
    target = paths.kafka_lib(session.stack.kafka_version)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(Stack(session).fetch(), target_is_directory=True)


@contextmanager
def secure_broker(session: Settings, root: Path) -> Iterator[SecureBroker]:
    """A secure broker under ``root`` beside the session stack (see the module doc)."""
    port = free_port()
    stack = replace(
        session.stack,
        state_dir=root / "state",
        kafka_port=port,
        kafka_controller_port=free_port(),
        kafka_ssl_port=free_port(),
        # Small: a second JVM next to the session broker on a 2-core machine.
        kafka_heap_mb=256,
        secure=True,
    )
    plain = replace(session, stack=stack)
    paths = StackPaths.for_state_dir(stack.state_dir)
    _link_jars(session, paths)
    material = SecureMaterial.ensure(paths.secure)
    broker = KafkaBroker(plain, paths)
    started = time.monotonic()
    broker.up()
    try:
        secure = SecureBroker(
            base=plain,
            material=material,
            paths=paths,
            topics=Topics(prefix=f"t{uuid.uuid4().hex[:8]}."),
            started_in_s=time.monotonic() - started,
        )
        admin = secure.settings_of("admin")
        ensure_topics(admin, secure.topics)
        apply_acls(admin, material, project_of(admin), secure.topics)
        yield secure
    finally:
        broker.down()
