"""The secure broker of ``loopline up --secure``: TLS, SCRAM logins and the authorizer.

Clients reach the broker on one ``SASL_SSL`` listener (TLS with the broker
certificate of :class:`SecureMaterial`, then a SCRAM-SHA-512 login). The KRaft
controller listener stays on loopback but is not PLAINTEXT: under the
StandardAuthorizer a PLAINTEXT controller listener needs ``User:ANONYMOUS`` as
a super user, which would make any local process a super user through that
port. It is ``SASL_SSL`` with the PLAIN mechanism instead (KRaft controllers
cannot check SCRAM logins, their credentials live in the metadata they serve),
so only the broker itself, logging in as ``admin``, gets through.

``admin`` is the super user (the stack's own clients: topics, users, ACLs and
the broker's inter-broker login); it is created when the storage is
formatted, every other principal by :func:`ensure_users` once the broker runs.
Nobody else can do anything without an ACL (``loopline.stack.kafka_acls``).

The broker's key and every password end up in ``server.properties``, which is
therefore written with mode 0600, like the secrets it copies.
"""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from loopline.config.kafka import admin_config
from loopline.config.loader import apply_layers
from loopline.contracts.errors import StackError
from loopline.contracts.settings import KafkaSettings, Settings
from loopline.security.secrets import read_secret
from loopline.stack.secure_material import SERVICES, SecureMaterial

SUPER_USER = "admin"
# Kafka's minimum for SCRAM-SHA-512 is 4096; more only slows every login.
SCRAM_ITERATIONS = 8192
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
# Written beside the data once the storage was formatted with the admin login.
SECURE_MARK = "secure-formatted"


def admin_kafka(settings: Settings, material: SecureMaterial) -> KafkaSettings:
    """The client settings of the ``admin`` principal at the local broker."""
    layers = material.settings(SUPER_USER, kafka_port=settings.stack.kafka_port)
    return apply_layers(settings, {"kafka": layers["kafka"]}).kafka


def _pem_value(path: Path) -> str:
    """A PEM file as one properties line (Kafka's PEM parser ignores the whitespace)."""
    return " ".join(path.read_text().split())


def _password(material: SecureMaterial, service: str) -> str:
    return read_secret(material.password_file(service), f"{service} password file")


def secure_properties(settings: Settings, material: SecureMaterial) -> dict[str, str]:
    """What the secure broker changes in ``kafka.server_properties`` (see the module doc)."""
    stack = settings.stack
    admin = _password(material, SUPER_USER)
    return {
        "listeners": (
            f"SASL_SSL://127.0.0.1:{stack.kafka_port},"
            f"SSL://127.0.0.1:{stack.kafka_ssl_port},"
            f"CONTROLLER://127.0.0.1:{stack.kafka_controller_port}"
        ),
        "advertised.listeners": (
            f"SASL_SSL://127.0.0.1:{stack.kafka_port},SSL://127.0.0.1:{stack.kafka_ssl_port}"
        ),
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL,SSL:SSL",
        # The SSL listener: a client certificate signed by the CA is the login, and
        # its common name the principal (User:features), so the same ACLs apply.
        "listener.name.ssl.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/,DEFAULT",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            f'{SCRAM_MODULE} required username="{SUPER_USER}" password="{admin}";'
        ),
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{PLAIN_MODULE} required username="{SUPER_USER}" password="{admin}" '
            f'user_{SUPER_USER}="{admin}";'
        ),
        # PEM inline: Kafka reads an unencrypted PKCS#8 key only from the config value.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": _pem_value(material.cert("kafka")),
        "ssl.keystore.key": _pem_value(material.key("kafka")),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.certificates": _pem_value(material.ca),
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{SUPER_USER}",
        "allow.everyone.if.no.acl.found": "false",
    }


def format_arguments(material: SecureMaterial) -> list[str]:
    """StorageTool ``format`` arguments creating the ``admin`` SCRAM login."""
    admin = _password(material, SUPER_USER)
    return ["--add-scram", f"SCRAM-SHA-512=[name={SUPER_USER},password={admin}]"]


def check_formatted_secure(data_dir: Path) -> None:
    """A plaintext-formatted log dir has no admin login: nobody could ever log in."""
    if (data_dir / "meta.properties").is_file() and not (data_dir.parent / SECURE_MARK).is_file():
        raise StackError(
            f"the Kafka data in {data_dir} was formatted for the plaintext stack and has no "
            "admin login; use another stack.state_dir for `loopline up --secure` "
            f"(or delete {data_dir})"
        )


def mark_formatted_secure(data_dir: Path) -> None:
    (data_dir.parent / SECURE_MARK).write_text("formatted with the admin SCRAM login\n")


def redact_format_log(log: Path) -> None:
    """StorageTool prints its bootstrap records, the admin login's salted SCRAM keys
    among them: not the password, but nothing a log should keep either."""
    lines = log.read_text(errors="replace").splitlines(keepends=True)
    kept = [
        "(bootstrap metadata with the admin SCRAM credential left out)\n"
        if "UserScramCredentialRecord" in line
        else line
        for line in lines
    ]
    log.write_text("".join(kept))


def ensure_users(
    kafka: KafkaSettings,
    material: SecureMaterial,
    services: tuple[str, ...] = SERVICES,
    *,
    timeout_s: float = 30.0,
) -> None:
    """Create (or reset to its password file) every service's SCRAM login, as ``admin``.

    Idempotent: an upsertion of an existing user just sets the same password again.
    """
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [
        UserScramCredentialUpsertion(name, info, _password(material, name).encode())
        for name in services
        if name != SUPER_USER
    ]
    admin = AdminClient(admin_config(kafka))
    futures = admin.alter_user_scram_credentials(upserts, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as e:
            # The error names the user and Kafka's reason, never the password.
            raise StackError(f"cannot create the Kafka login of {name}: {e.args[0].str()}") from e
