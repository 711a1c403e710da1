"""Settings sections for the connections (Kafka, Redis, the registry, gRPC) and the stack.

One frozen dataclass each, every field documented; the loop's services
have theirs in :mod:`loopline.contracts.settings_loop`.

:class:`loopline.contracts.settings.Settings` holds one of each; see that
module for how values are loaded and layered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loopline.contracts.errors import ConfigError

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
REGISTRY_BACKENDS = ("directory", "fsspec", "mlflow")


@dataclass(frozen=True)
class KafkaSettings:
    """How every Loopline client reaches Kafka."""

    bootstrap_servers: str = "127.0.0.1:19092"
    # Prefix for every Loopline topic; tests use a unique one per run.
    topic_prefix: str = "loopline."
    # Latency-tuned defaults: the client defaults (fetch.wait.max.ms=500) cost
    # hundreds of milliseconds end to end.
    linger_ms: int = 2
    fetch_wait_max_ms: int = 10
    consumer_group_prefix: str = "loopline-"
    # Security (README "Security"): PLAINTEXT, SSL (TLS, client certificates when
    # ssl_cert_file is set) or SASL_SSL (TLS plus a SCRAM-SHA-512 login).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    # This process's principal; each service runs with its own (ACLs per service).
    sasl_username: str = ""
    # The password is read from this file (never from the settings themselves).
    sasl_password_file: Path | None = None
    # CA that signed the brokers' certificates; a client certificate and key for SSL.
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in KAFKA_PROTOCOLS:
            raise ConfigError(
                f"kafka.security_protocol {self.security_protocol!r}: use one of {KAFKA_PROTOCOLS}"
            )
        if self.security_protocol == "SASL_SSL" and not (
            self.sasl_username and self.sasl_password_file
        ):
            raise ConfigError(
                "kafka.security_protocol SASL_SSL needs kafka.sasl_username and "
                "kafka.sasl_password_file (loopline up --secure writes them)"
            )


@dataclass(frozen=True)
class RedisSettings:
    """The online store."""

    host: str = "127.0.0.1"
    port: int = 16379
    db: int = 0
    socket_timeout_s: float = 0.05
    # Feature values expire when an entity is silent this long.
    feature_ttl_s: int = 7 * 24 * 3600
    # ACL user and password file (default user when empty); TLS with this CA,
    # and a client certificate when the server asks for one.
    username: str = ""
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def url(self) -> str:
        """Where the store is (no credentials: they never appear in a URL, log or report)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True)
class TopicSettings:
    """Partitioning and retention of Loopline's topics."""

    partitions: int = 4
    replication_factor: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000
    dead_letter_retention_ms: int = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class StackSettings:
    """The local development stack started by ``loopline up``."""

    state_dir: Path = Path(".loopline")
    kafka_version: str = "4.3.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    # The secure stack's second client listener: TLS with client certificates (SSL).
    kafka_ssl_port: int = 19094
    kafka_heap_mb: int = 512
    redis_maxmemory_mb: int = 512
    # Persistence off: RDB snapshots cause 10-50 ms latency spikes.
    redis_persistence: bool = False
    startup_timeout_s: float = 120.0
    # `loopline up --secure`: Kafka on SASL_SSL with ACLs, Redis with ACL users
    # and TLS, certificates and secrets generated under <state_dir>/secure.
    secure: bool = False
    # `loopline up --mlflow`: an MLflow tracking server on 127.0.0.1 at this port
    # (state under <state_dir>/mlflow); 0 picks a free port at each start.
    mlflow_port: int = 15000


@dataclass(frozen=True)
class ServingSettings:
    """The gRPC inference server."""

    host: str = "127.0.0.1"
    port: int = 50051
    processes: int = 2
    threads: int = 4
    max_concurrent_rpcs: int = 64
    default_deadline_ms: float = 10.0
    metrics_port: int = 9464
    # Registry alias this server follows (the model-updates topic and a registry poll).
    alias: str = "champion"
    # Hard cap on the one Redis round trip; the request deadline bounds it further.
    feature_timeout_ms: float = 5.0
    # After a failed Redis call, answer from defaults/last-known values this long
    # before trying Redis again, so a dead store costs no request a timeout.
    store_retry_ms: float = 200.0
    # A stored value older than this (vs the request time) is answered as stale.
    stale_after_s: float = 3600.0
    # Last-known entity values kept per process for when Redis is down.
    last_known_capacity: int = 100_000
    # Poll the registry alias this often (0: follow the model-updates topic only);
    # a poll is one small read (README "Registries"), so an alias moved by hand
    # (no announcement) serves within about this long.
    registry_poll_s: float = 1.0
    follow_model_updates: bool = True
    # A loaded model must reproduce its manifest's golden scores within this.
    golden_tolerance: float = 1e-4
    max_batch_size: int = 512
    # Requests larger than this are refused with INVALID_ARGUMENT.
    max_message_bytes: int = 1 << 20
    max_entity_id_length: int = 256
    log_predictions: bool = True
    # Predictions waiting for the Kafka producer; beyond it they are dropped and counted.
    prediction_queue_size: int = 100_000
    # Producer linger for the prediction log: bigger batches cost the serving
    # process and the broker less per prediction; nothing waits on this log.
    prediction_log_linger_ms: int = 20
    shutdown_grace_s: float = 5.0
    # On shutdown, new calls are answered UNAVAILABLE for this long before the
    # port closes (in-flight calls then get shutdown_grace_s to finish).
    shutdown_drain_s: float = 0.5
    # TLS: the server's certificate and key (PEM); with client_ca_file, mutual
    # TLS (only clients with a certificate signed by that CA get in).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = None
    # Bearer tokens, hashed at rest (`loopline token add`); empty: no token needed.
    tokens_file: Path | None = None
    # Health checks answer without a token (load balancers, Kubernetes probes).
    open_health: bool = True
    # Loopline's own clients of this server (the demo's driver, the benchmarks;
    # loopline.config.grpc): TLS trusting this CA (unset: plaintext), the file
    # holding the client's token (unset: none sent), and under mutual TLS the
    # client's certificate and key.
    ca_file: Path | None = None
    token_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


@dataclass(frozen=True)
class RegistrySettings:
    """Where model versions live."""

    path: Path = Path(".loopline/registry")
    # A secret key file: the trainer signs every model it publishes with it
    # (HMAC-SHA256 of the model and its manifest) and serving loads only models
    # whose signature checks out. Unset: models are checked by sha256 alone.
    signing_key_file: Path | None = None
    # Which registry (README "Registries"): "directory" (registry.path), "fsspec"
    # (a store many hosts share, at registry.uri) or "mlflow" (the MLflow Model
    # Registry at registry.mlflow_tracking_uri).
    backend: str = "directory"
    # fsspec: where the shared registry lives, e.g. s3://bucket/prefix or file:///srv/reg.
    uri: str = ""
    # fsspec on an S3-compatible store other than AWS (MinIO, ...): its endpoint.
    # Credentials come from the usual AWS chain (environment, files), never from here.
    endpoint_url: str = ""
    # An MLflow tracking server (http://host:port): set, every training run is
    # logged there; the registry too with backend "mlflow".
    mlflow_tracking_uri: str = ""
    # The MLflow experiment training runs are logged to.
    mlflow_experiment: str = "loopline"

    def __post_init__(self) -> None:
        if self.backend not in REGISTRY_BACKENDS:
            raise ConfigError(f"registry.backend {self.backend!r}: use one of {REGISTRY_BACKENDS}")
        if self.backend == "fsspec" and "://" not in self.uri:
            raise ConfigError(
                "registry.backend fsspec needs registry.uri, a store URL such as "
                f"s3://bucket/prefix or file:///srv/registry (got {self.uri!r})"
            )
        if self.backend == "mlflow" and not self.mlflow_tracking_uri:
            raise ConfigError(
                "registry.backend mlflow needs registry.mlflow_tracking_uri, the MLflow "
                "server's URL (loopline up --mlflow prints it)"
            )


@dataclass(frozen=True)
class ProjectSettings:
    """The feature repo Loopline runs on (``loopline init`` makes one)."""

    # Folder holding loopline.yaml; None: the fraud example of a source checkout.
    repo: Path | None = None
    # The repo's model that serving, the trainer and the flows run ("": its first).
    model: str = ""
