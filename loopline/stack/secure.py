"""``loopline up --secure``: the same single-node stack with TLS, logins and ACLs.

The stack's own settings become those of the ``admin`` principal (it creates
topics, users and ACLs); every service gets a settings file of its own under
``<state_dir>/secure/settings/<service>.yaml`` pointing at its certificates
and password file, so each runs with exactly its rights::

    loopline up --secure
    loopline --config .loopline/secure/settings/serve.yaml run serve
"""

from __future__ import annotations

from pathlib import Path

import yaml

from loopline.config.loader import apply_layers
from loopline.contracts.settings import Settings
from loopline.security.secrets import write_private
from loopline.stack.paths import StackPaths
from loopline.stack.secure_material import SERVICES, SecureMaterial


def material_of(settings: Settings) -> SecureMaterial:
    """The secure material of the settings' stack, created on first use."""
    return SecureMaterial.ensure(StackPaths.for_state_dir(settings.stack.state_dir).secure)


def as_service(settings: Settings, material: SecureMaterial, service: str) -> Settings:
    """``settings`` with ``service``'s credentials (and the secure stack switched on)."""
    return apply_layers(settings, material.settings(service))


def secure_settings(settings: Settings) -> Settings:
    """The stack's settings in secure mode: the admin principal, material created if new."""
    return as_service(settings, material_of(settings), "admin")


def service_config(settings: Settings, material: SecureMaterial, service: str) -> dict:
    """One service's settings file: where the stack is and its own credentials."""
    doc: dict[str, dict[str, object]] = {
        section: dict(values) for section, values in material.settings(service).items()
    }
    doc["kafka"]["bootstrap_servers"] = settings.kafka.bootstrap_servers
    doc["kafka"]["topic_prefix"] = settings.kafka.topic_prefix
    doc["redis"].update(host=settings.redis.host, port=settings.redis.port)
    doc["stack"]["state_dir"] = str(StackPaths.for_state_dir(settings.stack.state_dir).root)
    doc["registry"]["path"] = str(Path(settings.registry.path).resolve())
    return doc


def write_service_configs(settings: Settings, material: SecureMaterial) -> Path:
    """``<secure>/settings/<service>.yaml`` for every principal; returns the folder."""
    folder = material.root / "settings"
    folder.mkdir(parents=True, exist_ok=True)
    for service in SERVICES:
        path = folder / f"{service}.yaml"
        doc = service_config(settings, material, service)
        write_private(path, yaml.safe_dump(doc, sort_keys=True))
    return folder


def finish_secure_up(settings: Settings) -> str:
    """After the secure stack is up: users and ACLs per service, a settings file per
    service; returns what to tell the user."""
    from loopline.featurerepo.loader import project_of
    from loopline.stack.kafka_acls import apply_acls

    material = material_of(settings)
    apply_acls(settings, material, project_of(settings))
    folder = write_service_configs(settings, material)
    return (
        f"secure stack: certificates, passwords and tokens in {material.root} (mode 0600)\n"
        f"  each service runs with its own settings file, e.g.\n"
        f"    loopline --config {folder / 'serve.yaml'} run serve\n"
        f"  Kafka: SASL_SSL on 127.0.0.1:{settings.stack.kafka_port}, SSL with a client "
        f"certificate ({material.cert('features')}, ...) "
        f"on 127.0.0.1:{settings.stack.kafka_ssl_port}\n"
        f"  gRPC clients trust {material.ca} and send the token in "
        f"{material.token_file('client')}"
    )
