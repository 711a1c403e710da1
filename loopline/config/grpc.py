"""Channels for Loopline's own gRPC clients (the demo's driver, the benchmarks), from settings.

The client side of ``serving.*``: ``serving.ca_file`` turns TLS on (trusting
that CA), ``serving.client_cert_file``/``client_key_file`` add a client
certificate for mutual TLS, and ``serving.token_file`` holds the bearer
token sent with every call. The token travels as plain call metadata
(:attr:`GrpcClient.metadata`, pass it as ``metadata=``), the cheapest way:
call credentials would run a plugin per call.

>>> from loopline.contracts.settings import ServingSettings
>>> client = grpc_client(ServingSettings(port=50051))
>>> client.address, client.secure, client.metadata
('127.0.0.1:50051', False, ())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from loopline.contracts.errors import ConfigError
from loopline.contracts.settings import ServingSettings
from loopline.security.secrets import read_secret

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class GrpcClient:
    """Where to call, with which channel credentials and which call metadata."""

    address: str
    credentials: grpc.ChannelCredentials | None
    metadata: Metadata

    @property
    def secure(self) -> bool:
        return self.credentials is not None

    def channel(self, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.address, options=options)
        return grpc.secure_channel(self.address, self.credentials, options=options)

    def aio_channel(self, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, self.credentials, options=options)


def _read(path: Path, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path} ({e.strerror})") from None


def channel_credentials(conf: ServingSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting ``serving.ca_file`` (None: plaintext)."""
    if conf.ca_file is None:
        if conf.client_cert_file is not None:
            raise ConfigError(
                "serving.client_cert_file needs serving.ca_file (mutual TLS runs over TLS)"
            )
        return None
    if (conf.client_cert_file is None) != (conf.client_key_file is None):
        raise ConfigError("set both serving.client_cert_file and serving.client_key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(conf.ca_file, "serving.ca_file"),
        private_key=(
            _read(conf.client_key_file, "serving.client_key_file")
            if conf.client_key_file is not None
            else None
        ),
        certificate_chain=(
            _read(conf.client_cert_file, "serving.client_cert_file")
            if conf.client_cert_file is not None
            else None
        ),
    )


def auth_metadata(conf: ServingSettings) -> Metadata:
    """``authorization: Bearer <token>`` from ``serving.token_file`` (none when unset)."""
    if conf.token_file is None:
        return ()
    return (("authorization", f"Bearer {read_secret(conf.token_file, 'serving.token_file')}"),)


def grpc_client(conf: ServingSettings, address: str | None = None) -> GrpcClient:
    """The client of the server ``conf`` describes (or of ``address``)."""
    return GrpcClient(
        address=address or f"{conf.host}:{conf.port}",
        credentials=channel_credentials(conf),
        metadata=auth_metadata(conf),
    )
