"""The secure broker's configuration and the per-service ACLs: pure functions, no broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AclOperation, ResourceType

from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import project_of
from loopline.stack.kafka_acls import acl_bindings, project_rights, service_rights
from loopline.stack.kafka_security import format_arguments, secure_properties
from loopline.stack.secure_material import SERVICES, SecureMaterial

pytestmark = pytest.mark.unit
T = Topics("p.")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> SecureMaterial:
    return SecureMaterial.create(tmp_path_factory.mktemp("secure"))


def test_every_listener_needs_tls_and_a_login(material: SecureMaterial) -> None:
    props = secure_properties(Settings(), material)
    assert "PLAINTEXT" not in props["listener.security.protocol.map"]
    assert props["listeners"].startswith("SASL_SSL://127.0.0.1:")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert props["ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----")
    # Only admin's password is in the broker config (its inter-broker and controller login).
    text = "\n".join(props.values())
    assert [s for s in SERVICES if material.password(s) in text] == ["admin"]


def test_the_format_arguments_create_only_the_admin_login(material: SecureMaterial) -> None:
    args = format_arguments(material)
    assert args[0] == "--add-scram" and "name=admin," in args[1]


def test_every_principal_but_admin_has_rights_and_no_stranger_does() -> None:
    rights = service_rights(Settings(), ("events",), ("outcomes",), T)
    assert set(rights) == set(SERVICES) - {"admin"}


def test_only_serving_training_and_rollout_write_model_updates() -> None:
    rights = service_rights(Settings(), ("events",), ("outcomes",), T)
    writers = {name for name, r in rights.items() if T.model_updates in r.write}
    assert writers == {"serve", "trainer", "rollout"}
    assert {name for name, r in rights.items() if T.model_updates in r.read} == {"serve"}


def test_the_features_flow_reads_the_repo_events_and_writes_dead_letters_only() -> None:
    rights = service_rights(Settings(), ("cards", "logins"), ("chargebacks",), T)
    features = rights["features"]
    assert features.read == ("p.cards", "p.logins")
    assert features.write == (T.dead_letters,)
    assert rights["producer"].write == ("p.cards", "p.logins", "p.chargebacks")
    assert rights["producer"].read == ()
    assert "p.chargebacks" in rights["labels"].read


def test_groups_are_prefixed_with_the_configured_consumer_group_prefix() -> None:
    rights = service_rights(Settings(), ("events",), ("outcomes",), T)
    assert all(g.startswith("loopline-") for r in rights.values() for g in r.groups)
    assert rights["labels"].transactional_ids == ("p.labeled.labels-writer-",)


def test_the_bindings_name_each_grant_once() -> None:
    bindings = acl_bindings(service_rights(Settings(), ("events",), ("outcomes",), T))
    keys = [(b.principal, b.restype, b.name, b.operation) for b in bindings]
    assert len(keys) == len(set(keys))
    assert ("User:features", ResourceType.TOPIC, T.model_updates, AclOperation.WRITE) not in keys
    assert ("User:features", ResourceType.TOPIC, T.dead_letters, AclOperation.WRITE) in keys


def test_the_project_rights_follow_the_repo_declarations() -> None:
    settings = Settings()
    project = project_of(settings)
    rights = project_rights(settings, project, T)
    assert set(rights["features"].read) == {T.named(s.topic) for s in project.sources}
