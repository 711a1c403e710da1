"""A throw-away certificate authority for the local secure stack and the tests.

``loopline up --secure`` makes one CA and, signed by it, a certificate per
server (Kafka, Redis, gRPC) and per client that authenticates with one. Keys
are ECDSA P-256 (fast handshakes, short PEMs); private keys are written with
mode 0600. Production deployments bring their own PKI: Loopline only reads
PEM paths from its settings.

>>> import tempfile, pathlib
>>> pki = Pki.create(pathlib.Path(tempfile.mkdtemp()))
>>> server = pki.issue("kafka", hosts=("127.0.0.1", "localhost"))
>>> server.cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
True
>>> pki.verify(server.cert), pki.verify(Pki.create(pki.root / "other").ca_cert)
(True, False)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loopline.contracts.errors import ConfigError
from loopline.security.secrets import write_private

VALID_DAYS = 365


@dataclass(frozen=True)
class Issued:
    """One PEM certificate and its private key."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Loopline local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class Pki:
    """A CA in ``root`` (``ca.pem``, ``ca-key.pem``) that issues leaf certificates."""

    def __init__(self, root: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate):
        self.root = root
        self._ca_key = ca_key
        self._ca = ca

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @classmethod
    def create(cls, root: Path, name: str = "Loopline local CA") -> Pki:
        root.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        _write_key(root / "ca-key.pem", key)
        (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        return cls(root, key, ca)

    @classmethod
    def load(cls, root: Path) -> Pki:
        key = serialization.load_pem_private_key((root / "ca-key.pem").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(
                f"{root / 'ca-key.pem'}: not an EC key; delete {root} to make a new CA"
            )
        ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
        return cls(root, key, ca)

    def issue(self, name: str, hosts: tuple[str, ...] = (), *, client: bool = False) -> Issued:
        """``<name>.pem`` and ``<name>-key.pem``: a server certificate for ``hosts``
        or, with ``client``, a client certificate whose common name is ``name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self._ca_key, hashes.SHA256())
        issued = Issued(cert=self.root / f"{name}.pem", key=self.root / f"{name}-key.pem")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(issued.key, key)
        return issued

    def verify(self, cert_path: Path) -> bool:
        """Whether this CA signed the certificate in ``cert_path``."""
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
