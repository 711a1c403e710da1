"""Kafka ACLs of the secure stack: each service principal gets exactly its topics.

Who reads and writes what follows the code of each service (``streams/``,
``serving/``, ``trainer/``); consumer groups are granted by prefix
(``kafka.consumer_group_prefix`` + the service's group names), since several
services make a private group per process (``serving-<id>``,
``rollout-watch-<model>-<id>``, ...).

READ and WRITE on a topic imply DESCRIBE. Idempotent producers (every Loopline
producer) need no IDEMPOTENT_WRITE on the cluster since Kafka 3.0 (KIP-679):
WRITE on a topic is enough. The labels flow writes transactionally, so it also
gets its transactional ids (``<labeled topic>.labels-writer-<part>``).

>>> from loopline.contracts.settings import Settings
>>> rights = service_rights(Settings(), ("events",), ("outcomes",), Topics("p."))
>>> rights["features"].read, rights["features"].write
(('p.events',), ('p.dead-letters',))
>>> "p.model-updates" in rights["features"].write
False
>>> rights["serve"].groups
('loopline-serving-',)
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from loopline.config.kafka import admin_config
from loopline.contracts.errors import StackError
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurecore.project import Project
from loopline.stack.kafka_security import ensure_users
from loopline.stack.secure_material import SecureMaterial


@dataclass(frozen=True)
class Rights:
    """What one principal may do: topics (literal names), group and transactional-id prefixes."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    transactional_ids: tuple[str, ...] = ()


def service_rights(
    settings: Settings,
    event_topics: tuple[str, ...],
    outcome_topics: tuple[str, ...],
    topics: Topics,
) -> dict[str, Rights]:
    """Each service principal's rights; ``event_topics``/``outcome_topics`` unprefixed
    (the repo's event sources' and its models' outcomes')."""
    events = tuple(map(topics.named, event_topics))
    outcomes = tuple(map(topics.named, outcome_topics))
    t = topics
    dead = t.dead_letters

    def groups(*names: str) -> tuple[str, ...]:
        return tuple(settings.kafka.consumer_group_prefix + n for n in names)

    return {
        "features": Rights(read=events, write=(dead,), groups=groups("features")),
        "labels": Rights(
            # The labeled topic is read back too: reconciling a flush after a crash.
            read=(t.predictions, *outcomes, t.labeled),
            write=(t.labeled, dead),
            groups=groups("labels"),
            transactional_ids=(f"{t.labeled}.labels-writer-",),
        ),
        "drift": Rights(
            # `loopline drift tail` reads the alarms back (group drift-tail).
            read=(t.predictions, t.labeled, t.drift),
            write=(t.drift, dead),
            groups=groups("drift"),
        ),
        "serve": Rights(
            read=(t.model_updates,),
            write=(t.predictions, t.model_updates),
            groups=groups("serving-"),
        ),
        "trainer": Rights(
            # Training replays the event and outcome history; scheduled runs
            # request themselves on the retrain topic.
            read=(t.retrain, *events, *outcomes),
            write=(t.model_updates, t.retrain, dead),
            groups=groups("trainer"),
        ),
        "policy": Rights(
            # The retrain history tells the policy what was already requested.
            read=(t.drift, t.labeled, t.retrain),
            write=(t.retrain, dead),
            groups=groups("retrain-policy", "policy-rows-", "trainer-history-"),
        ),
        "rollout": Rights(
            read=(t.labeled,), write=(t.model_updates,), groups=groups("rollout-watch-")
        ),
        "producer": Rights(write=(*events, *outcomes)),
    }


def _allow(
    kind: ResourceType, name: str, pattern: ResourcePatternType, user: str, op: AclOperation
):
    return AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)


def acl_bindings(rights: dict[str, Rights]) -> list[AclBinding]:
    """The ALLOW bindings granting ``rights`` (everything else is denied)."""
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    out: list[AclBinding] = []
    for user, r in rights.items():
        grants = [
            (ResourceType.TOPIC, r.read, literal, AclOperation.READ),
            (ResourceType.TOPIC, r.write, literal, AclOperation.WRITE),
            (ResourceType.GROUP, r.groups, prefixed, AclOperation.READ),
            (ResourceType.TRANSACTIONAL_ID, r.transactional_ids, prefixed, AclOperation.WRITE),
        ]
        for kind, names, pattern, op in grants:
            # dict.fromkeys: one binding per name even when a topic is listed twice.
            out += [_allow(kind, name, pattern, user, op) for name in dict.fromkeys(names)]
    return out


def project_rights(settings: Settings, project: Project, topics: Topics) -> dict[str, Rights]:
    """:func:`service_rights` for a feature repo's project."""
    events = tuple(dict.fromkeys(s.topic for s in project.sources))
    outcomes = tuple(dict.fromkeys(m.outcomes.topic for m in project.models))
    return service_rights(settings, events, outcomes, topics)


def apply_acls(
    settings: Settings,
    material: SecureMaterial,
    project: Project,
    topics: Topics | None = None,
    *,
    timeout_s: float = 30.0,
) -> list[AclBinding]:
    """Every service's login and ACLs (idempotent: existing ones stay as they are).

    ``settings`` are the stack's admin settings (``secure.secure_settings``);
    ``topics`` defaults to the configured prefix. Returns the bindings.
    """
    # The broker creates the logins when it starts; a reused broker may predate them.
    ensure_users(settings.kafka, material, timeout_s=timeout_s)
    topics = topics or Topics(settings.kafka.topic_prefix)
    bindings = acl_bindings(project_rights(settings, project, topics))
    admin = AdminClient(admin_config(settings.kafka))
    futures = admin.create_acls(bindings, request_timeout=timeout_s)
    for binding, future in futures.items():
        try:
            future.result()
        except KafkaException as e:
            raise StackError(
                f"cannot create the Kafka ACL {binding.principal} {binding.operation.name} "
                f"{binding.restype.name} {binding.name}: {e.args[0].str()}"
            ) from e
    return bindings
