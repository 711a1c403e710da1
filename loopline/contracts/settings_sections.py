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
    # A Redis Cluster (README "Redis Cluster"): every client routes keys by hash
    # slot; host:port, then cluster_nodes ("host:port,host:port"), are the seeds
    # the slot map is first read from.
    cluster: bool = False
    cluster_nodes: str = ""

    def __post_init__(self) -> None:
        if self.cluster and self.db != 0:
            raise ConfigError("redis.db must be 0 with redis.cluster (a cluster has only db 0)")
        self.seeds  # noqa: B018 - validates redis.cluster_nodes now, not at first use

    @property
    def seeds(self) -> tuple[tuple[str, int], ...]:
        """Where a cluster client first looks: host:port, then ``cluster_nodes``."""
        out = [(self.host, self.port)]
        for entry in filter(None, (e.strip() for e in self.cluster_nodes.split(","))):
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(
                    f"redis.cluster_nodes: {entry!r} is not host:port; "
                    "write e.g. 10.0.0.5:6379,10.0.0.6:6379"
                )
            out.append((host.strip("[]"), int(port)))
        return tuple(dict.fromkeys(out))

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
    # `loopline up --redis-cluster N [--redis-replicas R]`: a Redis Cluster of N
    # masters (0: one plain redis-server) with R replicas each, on redis.port and
    # the N * (1 + R) - 1 ports after it (each also binds its port + 10000 for
    # the cluster bus). A master is failed over after cluster_node_timeout_ms.
    redis_cluster_masters: int = 0
    redis_cluster_replicas: int = 0
    redis_cluster_node_timeout_ms: int = 2000
    # `loopline up --monitoring`: Prometheus (and Grafana when installed) on these
    # ports, scraping every component's metrics port every scrape_interval_s.
    prometheus_port: int = 9090
    grafana_port: int = 3000
    scrape_interval_s: float = 15.0
    # Where the shipped deploy/ files are (prometheus/rules, grafana/loopline.json);
    # unset: the source checkout's deploy/ folder.
    deploy_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("prometheus_port", "grafana_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"stack.{name} {port}: use a TCP port between 1 and 65535")
        if not 0.1 <= self.scrape_interval_s <= 3600:
            raise ConfigError(
                f"stack.scrape_interval_s {self.scrape_interval_s}: use 0.1 to 3600 seconds"
            )
        if self.redis_cluster_masters and self.redis_cluster_masters < 3:
            raise ConfigError(
                "stack.redis_cluster_masters must be 0 (one Redis) or at least 3 "
                "(Redis Cluster's minimum)"
            )
        if self.redis_cluster_replicas < 0 or self.redis_cluster_node_timeout_ms < 100:
            raise ConfigError(
                "stack.redis_cluster_replicas must be >= 0 and "
                "stack.redis_cluster_node_timeout_ms >= 100"
            )

    @property
    def redis_cluster_nodes(self) -> int:
        """How many redis-server processes the cluster runs (0 without a cluster)."""
        return self.redis_cluster_masters * (1 + self.redis_cluster_replicas)


@dataclass(frozen=True)
class ServingSettings:
    """The gRPC inference server."""

    host: str = "127.0.0.1"
    port: int = 50051
    processes: int = 2
    threads: int = 4
    # Calls one worker holds at once, running or queued; beyond it gRPC answers
    # RESOURCE_EXHAUSTED at once instead of queueing calls past their deadline.
    # 0: twice `threads` (`rpc_limit`; the chaos `overload` scenario's measure).
    max_concurrent_rpcs: int = 0
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
    # Dynamic batching of concurrent Predict calls (serving/call_batcher.py): calls
    # that queue while a batch is scored are scored together, up to this many, in
    # one Redis MGET and one model run (1: every call alone). A lone call never waits.
    batch_max_calls: int = 32
    # How long a batch that is not full waits for more calls (Triton's queue delay);
    # 0: never wait, batch only what has queued. At most a fifth of the call's deadline.
    batch_max_wait_us: float = 0.0
    # Requests larger than this are refused with INVALID_ARGUMENT.
    max_message_bytes: int = 1 << 20
    max_entity_id_length: int = 256
    log_predictions: bool = True
    # Predictions waiting for the Kafka producer; beyond it they are dropped and counted.
    prediction_queue_size: int = 100_000
    # Producer linger for the prediction log: bigger batches cost the serving
    # process and the broker less per prediction; nothing waits on this log.
    prediction_log_linger_ms: int = 20
    # How long a logged prediction waits for the broker before it counts as
    # failed: long enough to buffer through a broker restart (which took 2-3
    # minutes on a loaded 2-core machine) instead of losing every prediction
    # made meanwhile. Memory stays bounded: prediction_queue_size here, plus
    # the producer's own queue (100,000 messages); beyond them, dropped and counted.
    prediction_log_timeout_s: float = 300.0
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

    @property
    def rpc_limit(self) -> int:
        """The calls one worker holds at once (``max_concurrent_rpcs``, 0: 2 x threads)."""
        return self.max_concurrent_rpcs or 2 * self.threads

    def __post_init__(self) -> None:
        if self.max_concurrent_rpcs < 0:
            raise ConfigError(
                f"serving.max_concurrent_rpcs is {self.max_concurrent_rpcs}; use 0 "
                "(twice serving.threads) or a positive limit"
            )
        if self.batch_max_calls < 1:
            raise ConfigError(
                f"serving.batch_max_calls is {self.batch_max_calls}; use 1 (no batching) or more"
            )
        if not 0 <= self.batch_max_wait_us <= 100_000:
            raise ConfigError(
                f"serving.batch_max_wait_us is {self.batch_max_wait_us}; use 0 (no waiting) "
                "to 100000 (0.1 s)"
            )


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
