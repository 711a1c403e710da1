"""Token authentication of every gRPC call: one table of method -> role, one interceptor.

A client sends ``authorization: Bearer <token>`` metadata; the token's roles
come from :class:`~loopline.security.tokens.TokenStore` (``serving.tokens_file``,
re-read when it changes, so adding or revoking a token needs no restart). A
token with ``admin`` may call anything. Refusals:

- no token, a malformed header, or an unknown/revoked token: ``UNAUTHENTICATED``;
- a valid token without the method's role: ``PERMISSION_DENIED``.

With ``serving.open_health`` the ``health`` methods answer without a token
(load balancers and Kubernetes probes carry none). Without a tokens file no
interceptor is installed at all, so plaintext deployments pay nothing.

>>> ROLE_OF["/loopline.v1.Inference/Predict"], ROLE_OF["/grpc.health.v1.Health/Check"]
('infer', 'health')
>>> role_of("/inference.GRPCInferenceService/ModelMetadata"), role_of("/x.Y/Z")
('read', 'admin')
>>> allowed("read", frozenset({"infer"})), allowed("read", frozenset({"admin"}))
(False, True)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from loopline.contracts.metric_names.serving import SERVING_AUTH_REFUSALS
from loopline.contracts.settings import ServingSettings
from loopline.oip import grpc_predict_v2_pb2 as oip_pb
from loopline.security.tokens import ADMIN, HEALTH, INFER, READ, TokenStore
from loopline.telemetry.prometheus import counter
from loopline.v1 import inference_pb2 as v1_pb

log = logging.getLogger(__name__)


def _service(descriptor: Any, name: str) -> str:
    return descriptor.DESCRIPTOR.services_by_name[name].full_name


_V1 = _service(v1_pb, "Inference")
_OIP = _service(oip_pb, "GRPCInferenceService")
_HEALTH = _service(health_pb2, "Health")

# Every RPC the server offers and the role it needs. A method missing here
# (a future RPC, a probe for one that does not exist) needs `admin`.
ROLE_OF: dict[str, str] = {
    f"/{service}/{method}": role
    for service, methods in {
        _V1: {"Predict": INFER, "PredictBatch": INFER},
        _OIP: {
            "ModelInfer": INFER,
            "ServerReady": READ,
            "ModelReady": READ,
            "ServerMetadata": READ,
            "ModelMetadata": READ,
            # A liveness probe, like the health service.
            "ServerLive": HEALTH,
        },
        # Check, Watch and (newer grpcio-health-checking) List.
        _HEALTH: {m.name: HEALTH for m in health_pb2.DESCRIPTOR.services_by_name["Health"].methods},
        # Reflection lists the whole API surface: operators only.
        reflection.SERVICE_NAME: {"ServerReflectionInfo": ADMIN},
    }.items()
    for method, role in methods.items()
}


def role_of(method: str) -> str:
    """The role the full method name (``/package.Service/Method``) needs."""
    return ROLE_OF.get(method, ADMIN)


def allowed(role: str, roles: frozenset[str]) -> bool:
    return role in roles or ADMIN in roles


def bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry; "" for a malformed
    one, None when there is none."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


NO_TOKEN = (
    "no token: send the metadata 'authorization: Bearer <token>' (an operator creates "
    "one with `loopline token add NAME --roles ROLES`)"
)
MALFORMED = "the 'authorization' metadata must read 'Bearer <token>'"
UNKNOWN = (
    "unknown or revoked token: use a current one (`loopline token list` on the server "
    "shows the valid names)"
)


def _denied(method: str, role: str, roles: frozenset[str]) -> str:
    return (
        f"this token's roles ({','.join(sorted(roles))}) do not include {role!r}, which "
        f"{method} needs: call with a token created with --roles {role}"
    )


class TokenAuth(grpc.ServerInterceptor):
    """Checks each call's bearer token against the tokens file and the role table."""

    def __init__(self, store: TokenStore, *, open_health: bool, registry: CollectorRegistry):
        self.store = store
        self._open = HEALTH if open_health else None
        self._refusals = counter(SERVING_AUTH_REFUSALS, registry)

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        method = details.method
        role = ROLE_OF.get(method, ADMIN)
        if role == self._open:
            return continuation(details)
        token = bearer(details.invocation_metadata)
        if not token:
            message = NO_TOKEN if token is None else MALFORMED
            return self._refuse(continuation, details, grpc.StatusCode.UNAUTHENTICATED, message)
        roles = self.store.roles_of(token)
        if roles is None:
            return self._refuse(continuation, details, grpc.StatusCode.UNAUTHENTICATED, UNKNOWN)
        if allowed(role, roles):
            return continuation(details)
        message = _denied(method, role, roles)
        return self._refuse(continuation, details, grpc.StatusCode.PERMISSION_DENIED, message)

    def _refuse(
        self,
        continuation: Callable[[Any], Any],
        details: grpc.HandlerCallDetails,
        code: grpc.StatusCode,
        message: str,
    ) -> Any:
        method = details.method
        label = method.rsplit("/", 1)[-1] if method in ROLE_OF else "unknown"
        self._refusals.labels(label, code.name).inc()
        return refusal(continuation(details), code, message)


def refusal(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same streaming shape as ``handler`` that only aborts."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    streams_in = bool(handler and handler.request_streaming)
    streams_out = bool(handler and handler.response_streaming)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(streams_in, streams_out)]
    return make(abort)


def interceptors(conf: ServingSettings, registry: CollectorRegistry) -> tuple[TokenAuth, ...]:
    """The server's interceptors: token auth when ``serving.tokens_file`` is set, else none."""
    if conf.tokens_file is None:
        return ()
    return (
        TokenAuth(TokenStore(conf.tokens_file), open_health=conf.open_health, registry=registry),
    )
