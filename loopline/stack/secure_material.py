"""The secure stack's certificates and secrets, and the settings each service runs with.

``loopline up --secure`` creates them once under ``<state_dir>/secure``:

- ``pki/``: a throw-away CA and, signed by it, the Kafka broker's, Redis's and
  the gRPC server's certificates (for 127.0.0.1 and localhost) and one client
  certificate (``client``) for mutual TLS;
- ``secrets/``: one random password per service principal, the same name on
  Kafka (SCRAM-SHA-512) and Redis (ACL user), mode 0600; the gRPC tokens file
  (hashed) with the plaintext tokens of the local clients beside it; the
  model signing key.

Every service of the loop gets its own principal (:data:`SERVICES`), so Kafka
and Redis ACLs can give each exactly what it needs. :meth:`SecureMaterial.env`
is the environment a service process runs with: the settings that point it
at its own credentials, never the secrets themselves.

>>> import tempfile, pathlib
>>> m = SecureMaterial.create(pathlib.Path(tempfile.mkdtemp()))
>>> env = m.env("features")
>>> env["LOOPLINE_KAFKA__SASL_USERNAME"], env["LOOPLINE_REDIS__USERNAME"]
('features', 'features')
>>> m.password("features") in str(env)
False
>>> SecureMaterial.load(m.root).password("serve") == m.password("serve")
True
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from loopline.contracts.errors import ConfigError
from loopline.security.certs import Pki
from loopline.security.secrets import write_private
from loopline.security.tokens import add_token

# The principals of the local secure stack: Kafka users and Redis ACL users alike.
# `admin` runs the stack itself (topics, ACLs, users); `producer` is a client
# sending events and outcomes (loopline simulate, the demo's driver).
SERVICES = ("admin", "features", "labels", "drift", "serve", "trainer", "policy", "rollout",
            "producer")  # fmt: skip
# The gRPC clients of the local stack and their token roles.
CLIENT_TOKENS = {"client": ("infer", "read", "health"), "operator": ("admin",)}
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class SecureMaterial:
    """Paths of everything ``loopline up --secure`` generated (see the module doc)."""

    root: Path

    # -- where things are ------------------------------------------------------
    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def ca(self) -> Path:
        return self.pki_dir / "ca.pem"

    def cert(self, name: str) -> Path:
        """``kafka``, ``redis``, ``grpc`` (servers) or ``client`` (mutual TLS)."""
        return self.pki_dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.pki_dir / f"{name}-key.pem"

    def password_file(self, service: str) -> Path:
        if service not in SERVICES:
            raise ConfigError(f"unknown service principal {service!r}; known: {SERVICES}")
        return self.secrets_dir / f"{service}.password"

    def password(self, service: str) -> str:
        return self.password_file(service).read_text().strip()

    @property
    def tokens_file(self) -> Path:
        """Hashed gRPC tokens (serving reads this)."""
        return self.secrets_dir / "grpc-tokens"

    def token_file(self, client: str) -> Path:
        """The plaintext token of a local gRPC client (``client`` or ``operator``)."""
        return self.secrets_dir / f"{client}.token"

    @property
    def signing_key(self) -> Path:
        return self.secrets_dir / "model-signing.key"

    # -- making and loading ----------------------------------------------------
    @classmethod
    def create(cls, root: Path) -> SecureMaterial:
        """Generate everything (a new CA, certificates, passwords, tokens, key)."""
        m = cls(root)
        pki = Pki.create(m.pki_dir)
        for server in ("kafka", "redis", "grpc"):
            pki.issue(server, hosts=HOSTS)
        pki.issue("client", client=True)
        for service in SERVICES:  # Kafka's SSL listener: the certificate is the login
            pki.issue(service, client=True)
        m.secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(m.secrets_dir, 0o700)
        for service in SERVICES:
            write_private(m.password_file(service), secrets.token_urlsafe(24) + "\n")
        for client, roles in CLIENT_TOKENS.items():
            write_private(m.token_file(client), add_token(m.tokens_file, client, roles) + "\n")
        write_private(m.signing_key, secrets.token_urlsafe(48) + "\n")
        return m

    @classmethod
    def load(cls, root: Path) -> SecureMaterial:
        m = cls(root)
        if not (m.ca.is_file() and m.tokens_file.is_file()):
            raise ConfigError(f"no secure stack material in {root}; run `loopline up --secure`")
        return m

    @classmethod
    def ensure(cls, root: Path) -> SecureMaterial:
        """The material in ``root``, created on first use."""
        return cls.load(root) if (root / "pki" / "ca.pem").is_file() else cls.create(root)

    # -- what a service runs with ----------------------------------------------
    def settings(self, service: str, kafka_port: int | None = None) -> dict[str, dict[str, object]]:
        """Settings layers (section -> values) for ``service``'s own credentials."""
        layers: dict[str, dict[str, object]] = {
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_username": service,
                "sasl_password_file": str(self.password_file(service)),
                "ssl_ca_file": str(self.ca),
            },
            "redis": {
                "username": service,
                "password_file": str(self.password_file(service)),
                "tls": True,
                "ca_file": str(self.ca),
            },
            "serving": {
                "tls_cert_file": str(self.cert("grpc")),
                "tls_key_file": str(self.key("grpc")),
                "tokens_file": str(self.tokens_file),
                # The client side: Loopline's own gRPC clients (the demo's driver).
                "ca_file": str(self.ca),
                "token_file": str(self.token_file("client")),
            },
            "registry": {"signing_key_file": str(self.signing_key)},
            "stack": {"secure": True},
        }
        if kafka_port is not None:
            layers["kafka"]["bootstrap_servers"] = f"127.0.0.1:{kafka_port}"
        return layers

    def kafka_ssl(self, service: str, ssl_port: int) -> dict[str, object]:
        """``kafka`` settings logging in with ``service``'s client certificate instead
        (the SSL listener at ``ssl_port``)."""
        self.password_file(service)  # names the known principals on a typo
        return {
            "security_protocol": "SSL",
            "bootstrap_servers": f"127.0.0.1:{ssl_port}",
            "ssl_ca_file": str(self.ca),
            "ssl_cert_file": str(self.cert(service)),
            "ssl_key_file": str(self.key(service)),
        }

    def env(self, service: str) -> dict[str, str]:
        """``LOOPLINE_<SECTION>__<KEY>`` variables for ``service`` (paths, never secrets)."""
        return {
            f"LOOPLINE_{section.upper()}__{key.upper()}": str(value)
            for section, values in self.settings(service).items()
            for key, value in values.items()
        }
