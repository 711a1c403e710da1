"""The server's TLS credentials, re-read when the certificate files change.

``serving.tls_cert_file`` and ``serving.tls_key_file`` turn TLS on; with
``serving.client_ca_file`` too, mutual TLS: a client must present a
certificate signed by that CA or the handshake fails. gRPC asks
:meth:`CertificateFiles.fetch` at every new connection; when a file's
modification time or size changed, the files are read again, so rotating a
certificate is replacing its files (connections already open keep theirs).
A rotation caught half-way (a new certificate beside the old key) keeps the
last good pair until the key follows.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import ServingSettings
from loopline.security.secrets import file_stamp

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int], ...]


class CertificateFiles:
    """The server's certificate, key and (mutual TLS) client CA, with their file stamps."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.paths = (cert, key) + ((client_ca,) if client_ca is not None else ())
        self._lock = threading.Lock()
        self._stamp = self._stamp_now()
        self.initial = self._load()
        self._refused: Stamp | None = None

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed since the last load, else None."""
        try:
            stamp = self._stamp_now()
        except ConfigError as e:
            self._warn_once(None, e)
            return None
        with self._lock:
            if stamp in (self._stamp, self._refused):
                return None
            try:
                config = self._load()
            except ConfigError as e:
                self._warn_once(stamp, e)
                return None
            self._stamp = stamp
        log.info("serving TLS: certificate files changed; new connections use them")
        return config

    def _warn_once(self, stamp: Stamp | None, error: ConfigError) -> None:
        if stamp is None or stamp != self._refused:
            log.warning("serving TLS: keeping the current certificate (%s)", error)
        if stamp is not None:
            self._refused = stamp

    def _stamp_now(self) -> Stamp:
        return file_stamp(
            self.paths, "serving TLS", "check serving.tls_cert_file, tls_key_file, client_ca_file"
        )

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key, *ca = (_read(p) for p in self.paths)
        _check_pair(cert, key, self.paths[0], self.paths[1])
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=ca[0] if ca else None
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"serving TLS: cannot read {path} ({e.strerror})") from None


def _check_pair(cert: bytes, key: bytes, cert_path: Path, key_path: Path) -> None:
    """The key must be the certificate's: gRPC would only fail at the next handshake."""
    try:
        public = x509.load_pem_x509_certificate(cert).public_key()
        private = serialization.load_pem_private_key(key, None)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"serving TLS: {cert_path} / {key_path} are not a PEM certificate and an "
            f"unencrypted PEM key ({type(e).__name__})"
        ) from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*der) != private.public_key().public_bytes(*der):
        raise ConfigError(
            f"serving TLS: {key_path} is not the key of {cert_path}; replace both together"
        )


def server_credentials(conf: ServingSettings) -> grpc.ServerCredentials | None:
    """TLS (or mutual TLS) credentials from ``serving.*``; None for plaintext."""
    if conf.tls_cert_file is None and conf.tls_key_file is None:
        if conf.client_ca_file is not None:
            raise ConfigError(
                "serving.client_ca_file needs serving.tls_cert_file and serving.tls_key_file "
                "(mutual TLS runs over TLS)"
            )
        return None
    if conf.tls_cert_file is None or conf.tls_key_file is None:
        raise ConfigError("serving TLS: set both serving.tls_cert_file and serving.tls_key_file")
    files = CertificateFiles(conf.tls_cert_file, conf.tls_key_file, conf.client_ca_file)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch, require_client_authentication=conf.client_ca_file is not None
    )


def describe(conf: ServingSettings) -> str:
    """How callers get in, for the server's start line: "plaintext", "TLS + tokens", ..."""
    transport = (
        "plaintext"
        if conf.tls_cert_file is None
        else "mutual TLS"
        if conf.client_ca_file is not None
        else "TLS"
    )
    return f"{transport} + tokens" if conf.tokens_file is not None else transport
