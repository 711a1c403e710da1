"""One server process: the core, its model manager and follower, and the gRPC services.

Services: ``loopline.v1.Inference``, ``inference.GRPCInferenceService``
(Open Inference Protocol v2), ``grpc.health.v1.Health`` (NOT_SERVING until a
model is loaded and again from the start of a shutdown) and server
reflection, over TLS or mutual TLS (:mod:`~loopline.serving.tls`) and behind
bearer tokens (:mod:`~loopline.serving.auth`) when configured. Servicers are
thin: each RPC calls a handler and maps its error
with :func:`~loopline.serving.status.status_for`.

Concurrency: a small thread pool (threads contend for the GIL; more only
adds tail latency) and ``maximum_concurrent_rpcs``, beyond which gRPC itself
answers RESOURCE_EXHAUSTED instead of queueing without bound. Several of
these processes share one port with SO_REUSEPORT to use every core
(:mod:`loopline.serving.supervisor`).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from loopline.contracts.errors import LooplineError
from loopline.contracts.settings import Settings
from loopline.contracts.topics import Topics
from loopline.featurerepo.loader import project_of
from loopline.oip import grpc_predict_v2_pb2 as oip_pb
from loopline.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from loopline.registry.backend import open_registry
from loopline.registry.manifest import ModelRegistry
from loopline.serving import auth, tls
from loopline.serving.announcer import RolloutAnnouncer
from loopline.serving.cluster_store import ClusterFeatureStore
from loopline.serving.core import InferenceCore
from loopline.serving.feature_store import RedisFeatureStore
from loopline.serving.feature_version import VersionSwitch, serving_feature_set
from loopline.serving.metrics import ServingMetrics
from loopline.serving.model import LoadedModel
from loopline.serving.model_follower import ModelFollower
from loopline.serving.model_manager import ModelManager
from loopline.serving.model_slot import ModelSlot
from loopline.serving.oip_api import OipHandlers
from loopline.serving.prediction_log import KafkaPredictionLog, prediction_log_overrides
from loopline.serving.rollout import RolloutFollower
from loopline.serving.status import status_for
from loopline.serving.v1_api import V1Handlers
from loopline.v1 import inference_pb2 as v1_pb
from loopline.v1 import inference_pb2_grpc as v1_grpc

log = logging.getLogger(__name__)


V1_SERVICE = v1_pb.DESCRIPTOR.services_by_name["Inference"].full_name
OIP_SERVICE = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVICES = (V1_SERVICE, OIP_SERVICE)
# RPCs whose handler time is the "total" stage (the scoring calls).
SCORING = frozenset({"Predict", "PredictBatch", "ModelInfer"})


class _Calls:
    """Runs one handler: timing, status mapping, request counting."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics
        self._ok = {m: metrics.requests.labels(m, "OK") for m in SCORING}

    def run(
        self, method: str, handler: Callable[[Any, float | None], Any], request: Any, context: Any
    ) -> Any:
        if method not in SCORING:
            return self._run(method, handler, request, context)
        t0 = time.perf_counter()
        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            response = self._run(method, handler, request, context)
        finally:
            in_flight.dec()
        self.metrics.total.observe(time.perf_counter() - t0)
        self._ok[method].inc()
        return response

    def _run(
        self, method: str, handler: Callable[[Any, float | None], Any], request: Any, context: Any
    ) -> Any:
        try:
            return handler(request, context.time_remaining())
        except Exception as e:
            code = status_for(e)
            if not isinstance(e, LooplineError):
                log.exception("%s failed unexpectedly", method)
            self.metrics.request(method, code.name)
            context.abort(code, str(e))


def _rpc(method: str, handler: str) -> Callable[[Any, Any, Any], Any]:
    """The servicer method ``method``: ``self.h.<handler>`` run through :class:`_Calls`."""

    def call(self: Any, request: Any, context: Any) -> Any:
        return self.calls.run(method, getattr(self.h, handler), request, context)

    call.__name__ = call.__qualname__ = method
    return call


class _V1Servicer(v1_grpc.InferenceServicer):
    def __init__(self, handlers: V1Handlers, calls: _Calls) -> None:
        self.h, self.calls = handlers, calls

    Predict = _rpc("Predict", "predict")
    PredictBatch = _rpc("PredictBatch", "predict_batch")


class _OipServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, handlers: OipHandlers, calls: _Calls) -> None:
        self.h, self.calls = handlers, calls

    ServerLive = _rpc("ServerLive", "server_live")
    ServerReady = _rpc("ServerReady", "server_ready")
    ModelReady = _rpc("ModelReady", "model_ready")
    ServerMetadata = _rpc("ServerMetadata", "server_metadata")
    ModelMetadata = _rpc("ModelMetadata", "model_metadata")
    ModelInfer = _rpc("ModelInfer", "model_infer")


class InferenceServer:
    """Everything one serving process runs; :meth:`start`, then :meth:`stop` gracefully."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelRegistry | None = None,
        metrics: ServingMetrics | None = None,
        port: int | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        conf = settings.serving
        self.port = conf.port if port is None else port
        self.reuse_port = reuse_port
        self.metrics = metrics or ServingMetrics(CollectorRegistry())
        self.registry = registry or open_registry(settings.registry)
        definitions = project_of(settings).feature_set(settings.project.model)
        self.feature_set = serving_feature_set(
            definitions, self.registry, settings.registry.path, definitions.name, conf.alias
        )
        # Set when the alias moves to a model of another applied feature-set version.
        self.version_switch = VersionSwitch(settings.registry.path, self.feature_set)
        self.topics = Topics(settings.kafka.topic_prefix)
        self.slot = ModelSlot()
        # Address, ACL user and TLS from redis.* (loopline.config.redis); on a
        # Redis Cluster the slot map is read now: a wrong address fails the start.
        store_type = ClusterFeatureStore if settings.redis.cluster else RedisFeatureStore
        self.store: RedisFeatureStore | ClusterFeatureStore = store_type.from_settings(
            settings.redis, retry_after_s=conf.store_retry_ms / 1000.0
        )
        self.sink = (
            KafkaPredictionLog(
                settings.kafka,
                self.topics.predictions,
                feature_set=self.feature_set.name,
                metrics=self.metrics,
                queue_size=conf.prediction_queue_size,
                **prediction_log_overrides(conf),
            )
            if conf.log_predictions
            else None
        )
        self.announcer = (
            RolloutAnnouncer(settings.kafka, self.topics.model_updates, self.registry)
            if conf.follow_model_updates
            else None
        )
        self.rollout = RolloutFollower(
            registry=self.registry,
            model_name=self.feature_set.name,
            feature_set=self.feature_set,
            metrics=self.metrics,
            settings=settings.rollout,
            golden_tolerance=conf.golden_tolerance,
            announce=self.announcer,
        )
        self.core = InferenceCore(
            settings=conf,
            feature_set=self.feature_set,
            key_prefix=settings.streams.redis_key_prefix,
            store=self.store,
            cluster=settings.redis.cluster,
            slot=self.slot,
            metrics=self.metrics,
            sink=self.sink,
            rollout=self.rollout,
        )
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
        )
        self.manager = ModelManager(
            registry=self.registry,
            model_name=self.feature_set.name,
            alias=conf.alias,
            feature_set=self.feature_set,
            slot=self.slot,
            metrics=self.metrics,
            golden_tolerance=conf.golden_tolerance,
            on_change=self._model_changed,
            adopt=self.rollout.adoptable,
            on_other_feature_set=self.version_switch.consider,
        )
        self.follower = ModelFollower(
            self.manager,
            kafka=settings.kafka if conf.follow_model_updates else None,
            topic=self.topics.model_updates,
            poll_s=conf.registry_poll_s,
            rollout=self.rollout,
        )
        self.oip = OipHandlers(self.core, conf.max_message_bytes)
        self.v1 = V1Handlers(self.core, conf.max_message_bytes)
        self._server: grpc.Server | None = None
        self._stopped = threading.Event()
        self._done = threading.Event()
        for service in ("", *SERVICES):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    @property
    def address(self) -> str:
        return f"{self.settings.serving.host}:{self.port}"

    def start(self) -> int:
        """Load the alias's model if there is one, then listen; returns the bound port."""
        conf = self.settings.serving
        # Security settings are checked first: a wrong path fails before a model loads.
        credentials = tls.server_credentials(conf)
        interceptors = auth.interceptors(conf, self.metrics.registry)
        outcome = self.manager.sync()
        # A running plan survives a restart: the candidate is loaded before the port opens.
        self.rollout.sync()
        if outcome is None:
            log.warning(
                "no %s@%s in the registry yet: NOT_SERVING until one is published",
                self.feature_set.name,
                self.settings.serving.alias,
            )
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=conf.threads, thread_name_prefix="rpc"),
            # Token auth only when a tokens file is set: no cost per call otherwise.
            interceptors=interceptors,
            maximum_concurrent_rpcs=conf.rpc_limit,
            options=[
                ("grpc.so_reuseport", 1 if self.reuse_port else 0),
                # Up to twice the limit arrives, so the handler can refuse it with
                # INVALID_ARGUMENT and a size; beyond that gRPC refuses it itself.
                ("grpc.max_receive_message_length", 2 * conf.max_message_bytes),
            ],
        )
        calls = _Calls(self.metrics)
        v1_grpc.add_InferenceServicer_to_server(_V1Servicer(self.v1, calls), server)
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(_OipServicer(self.oip, calls), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        address = f"{conf.host}:{self.port}"
        bound = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
        if bound == 0:
            raise LooplineError(f"cannot listen on {conf.host}:{self.port}")
        self.port = bound
        freeze_heap(collect=True)
        server.start()
        self._server = server
        self.follower.start()
        log.info("serving %s on %s (%s)", self.feature_set.name, self.address, tls.describe(conf))
        return bound

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful: NOT_SERVING at once, in-flight calls finish, the log is flushed."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.serving.shutdown_grace_s if grace_s is None else grace_s
        self.oip.shutting_down = True
        self.health.enter_graceful_shutdown()
        self.core.models.draining = True
        self.follower.stop()
        if self._server is not None:
            # New calls get a clean, retryable UNAVAILABLE from the handlers while
            # clients and load balancers notice; then gRPC stops taking calls at all.
            time.sleep(self.settings.serving.shutdown_drain_s)
            # New calls are refused from here; running ones get `grace` to finish.
            self._server.stop(grace).wait()
        self.core.close()  # queued shadow scores, logged before the log closes
        if self.sink is not None:
            self.sink.close(timeout_s=max(grace, 1.0))
        if self.announcer is not None:
            self.announcer.close()
        self.store.close()
        self._done.set()
        log.info("stopped serving on %s", self.address)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until :meth:`stop` has finished; True when it has."""
        return self._done.wait(timeout_s)

    def _model_changed(self, model: LoadedModel) -> None:
        if self._stopped.is_set():
            return
        freeze_heap(collect=False)  # a full collection now would stall the calls in flight
        for service in ("", *SERVICES):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)


def freeze_heap(*, collect: bool) -> None:
    """Move every object alive now out of the cyclic collector's reach.

    A full collection walks every tracked object while holding the GIL: in a
    serving process (models, clients, protobuf and ONNX bindings, ~70k
    objects) that stalled every call in flight for about 36 ms, three times
    the latency budget. What is alive after start-up or a model load is
    long-lived, so it is frozen (``gc.freeze``, as Instagram does for its
    servers) and collections walk only what requests allocate. Frozen
    objects are still freed by reference counting; only a cycle among them
    outlives its last use (a retired model's few cycles, once per swap).
    ``collect`` first clears what is garbage already (at start, before calls).
    """
    if collect:
        gc.collect()
    gc.freeze()
