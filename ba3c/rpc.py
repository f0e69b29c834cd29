"""gRPC plumbing in one place: servers, channels, the token check, health, retries.

Servers are built by `make_server` (message limits, keepalive, the standard health
service, the token interceptor, a cap on concurrent RPCs); clients by `make_channel` (the
same limits, keepalive, the token on every call, and gRPC's own retry of a single call that
failed with UNAVAILABLE, from the service config). Waiting longer than that retry does, e.g.
for a shard that restarts at a new address, is the paramserver client's job, with backoff
and a deadline. Services never construct
`grpc.server` or `grpc.insecure_channel` themselves.

The token travels in the metadata key "authorization" as "Bearer <token>" and is compared
in constant time. A call without it, or with another, ends with UNAUTHENTICATED.

TLS (ba3c/tls.py) is off unless asked for: `use_tls(RunTLS)` (called by ba3c.service.start
when the config says `tls = true`) makes every later server and channel of the process use
the run's CA; a `tls=` argument does the same for one server or channel.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import time
from collections.abc import Iterable
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from ba3c.tls import RunTLS

AUTH_KEY = "authorization"
MiB = 1 << 20
_process_tls: RunTLS | None = None


def use_tls(run_tls: RunTLS | None) -> None:
    """Every server and channel made after this call uses `run_tls` (None: plaintext)."""
    global _process_tls
    _process_tls = run_tls


def bind_host(configured: str = "") -> str:
    """Where servers listen: the configured address, else the node's name under Slurm
    (so other nodes can reach it), else loopback. Never 0.0.0.0 unless configured."""
    if configured:
        return configured
    if os.environ.get("SLURM_JOB_ID"):
        return socket.gethostname()
    return "127.0.0.1"


def message_limit(max_message_mb: int) -> int:
    return max(1, int(max_message_mb)) * MiB


def _common_options(max_message_bytes: int) -> list[tuple[str, object]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


# ---------------------------------------------------------------------------------------
# The token


def _bearer(token: str) -> str:
    return f"Bearer {token}"


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call that does not carry the run's token (constant-time compare)."""

    def __init__(self, token: str):
        self._expected = _bearer(token).encode()

    def _authorised(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key == AUTH_KEY:
                if isinstance(value, str):
                    value = value.encode()
                return hmac.compare_digest(value, self._expected)
        return False

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or self._authorised(handler_call_details.invocation_metadata):
            return handler
        return _refusing_handler(handler)


def _refusing_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    message = "missing or wrong run token (RUN_DIR/secret)"

    def refuse(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def refuse_stream(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this a generator

    kwargs = dict(
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class _ClientToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the token to the metadata of every outgoing call."""

    def __init__(self, token: str):
        self._pair = (AUTH_KEY, _bearer(token))

    def _details(self, details):
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._pair],
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


# ---------------------------------------------------------------------------------------
# Servers


class Server:
    """A started gRPC server with its health service; `port` is the bound port."""

    def __init__(
        self, server: grpc.Server, health_servicer: health.HealthServicer, host: str, port: int
    ):
        self.grpc = server
        self.health = health_servicer
        self.host = host
        self.port = port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_serving(self, service: str = "", serving: bool = True) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set(service, status)

    def stop(self, grace: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.grpc.stop(grace).wait()


def make_server(
    token: str,
    register,  # callable(grpc.Server) that adds the service's servicers
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_bytes: int = 256 * MiB,
    max_workers: int = 32,
    max_concurrent_rpcs: int | None = None,
    service_names: Iterable[str] = (),
    tls: RunTLS | None = None,
    advertise: str | None = None,
) -> Server:
    """Builds, binds and starts a server. Raises OSError if the address cannot be bound.

    It listens on `host`; its `address` (what goes to RUN_DIR/addresses/) names
    `advertise` (default: `host`; see ba3c/netaddr.py).

    With TLS (`tls`, else the process's `use_tls`) it serves only TLS, with a certificate
    for `host` issued by the run's CA.
    """
    tls = tls or _process_tls
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[TokenInterceptor(token)],
        options=[
            *_common_options(max_message_bytes),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if tls is not None:
        bound = server.add_secure_port(f"{host}:{port}", tls.server_credentials(advertise or host))
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    server.start()
    result = Server(server, health_servicer, advertise or host, bound)
    result.set_serving("")
    for name in service_names:
        result.set_serving(name)
    return result


# ---------------------------------------------------------------------------------------
# Channels


def retry_service_config(services: Iterable[str], max_attempts: int = 5) -> str:
    """gRPC service config: retry UNAVAILABLE with exponential backoff; wait for ready."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": s} for s in services],
                    "waitForReady": True,
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def make_channel(
    address: str,
    token: str,
    max_message_bytes: int = 256 * MiB,
    retry_services: Iterable[str] = ("ba3c.v1.ParameterServer",),
    tls: RunTLS | None = None,
) -> grpc.Channel:
    """A channel to `address` that sends the token on every call and retries UNAVAILABLE.

    With TLS (`tls`, else the process's `use_tls`) it trusts only the run's CA.
    """
    tls = tls or _process_tls
    options = [
        *_common_options(max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config(retry_services)),
        # reconnect quickly after a server restarts
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if tls is not None:
        channel = grpc.secure_channel(address, tls.channel_credentials(), options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, _ClientToken(token))


def health_check(channel: grpc.Channel, service: str = "", timeout: float = 2.0) -> bool:
    """True if the server behind `channel` answers SERVING."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_until_serving(channel: grpc.Channel, timeout: float, service: str = "") -> None:
    """Polls the health service until SERVING; raises TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_check(channel, service, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
            return
        time.sleep(0.05)
    raise TimeoutError(f"server not SERVING within {timeout}s")
