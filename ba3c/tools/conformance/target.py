"""What every role's checks share: the run directory (config, token, addresses), channels
with and without the token, raw calls with arbitrary bytes, and the health checks."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ba3c import config as configuration
from ba3c.rundir import RunDir
from ba3c.tools.conformance.suite import Failed, expect, expect_code

MiB = 1 << 20
KIT_MESSAGE_LIMIT = 512 * MiB  # larger than any server's, so the server's limit is tested


class Target:
    """The run directory the implementation under test uses."""

    def __init__(self, run_dir: str, index: int = 0, timeout: float = 60.0):
        self.run_dir = RunDir(run_dir)
        if not self.run_dir.config_path.exists():
            raise SystemExit(f"ba3c conformance: {self.run_dir.config_path} does not exist")
        self.cfg: configuration.Config = self.run_dir.load_config(environ={})
        self.token = self.run_dir.read_secret()  # the file's newline stripped
        self.index = index
        self.timeout = timeout
        if self.cfg.net.tls:
            raise SystemExit("ba3c conformance: runs with tls = true are not supported")

    def channel(self, address: str, token: str | None = "") -> grpc.Channel:
        """A plaintext channel that sends `token` (default: the run's; None: no token)."""
        channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", KIT_MESSAGE_LIMIT),
                ("grpc.max_receive_message_length", KIT_MESSAGE_LIMIT),
            ],
        )
        if token is None:
            return channel
        return grpc.intercept_channel(channel, _Token(token or self.token))


class _Token(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self._pair = ("authorization", f"Bearer {token}")

    def _details(self, details):
        return details._replace(metadata=[*(details.metadata or ()), self._pair])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def raw_unary(channel: grpc.Channel, method: str, data: bytes, timeout: float = 30.0) -> bytes:
    """Calls `method` ("/pkg.Service/Method") with `data` as the serialised request."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return call(data, timeout=timeout)


GARBAGE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x0a\xff\xff\xff\x0f"


def check_health(target: Target, address: str, service: str) -> None:
    """Health answers SERVING for "" and `service` with the token."""
    with target.channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", service):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            expect(status == "SERVING", f"health of {name!r} is {status}")


def check_health_needs_token(target: Target, address: str) -> None:
    with target.channel(address, token=None) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        expect_code(
            lambda: stub.Check(health_pb2.HealthCheckRequest(), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )


def check_refuses_token(target: Target, address: str, method: str, token: str | None) -> None:
    """A unary call to `method` with `token` (None: none) ends with UNAUTHENTICATED."""
    with target.channel(address, token=token) as channel:
        expect_code(lambda: raw_unary(channel, method, b""), grpc.StatusCode.UNAUTHENTICATED)


def wait_address(target: Target, role: str) -> str:
    try:
        return target.run_dir.wait_for_address(role, target.index, timeout=target.timeout)
    except TimeoutError as e:
        raise Failed(str(e)) from None
