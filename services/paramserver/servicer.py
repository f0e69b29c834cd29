"""The `ba3c.v1.ParameterServer` gRPC service on top of a `Shard`.

Handlers are registered with a generic handler rather than the generated servicer base so
that PushPull and Pull can answer with bytes the shard built once per version and shares
between callers, and PushPull parses its request with `tensors.parse`, which leaves the
gradients as views of the received bytes. Request sizes are counted in the deserializer,
before parsing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import structlog

from ba3c import tensors
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import tensor_pb2
from services.paramserver import metrics
from services.paramserver.shard import InvalidArgument, Shard, ShardError

log = structlog.get_logger()

SERVICE = "ba3c.v1.ParameterServer"


@dataclass
class PushRequest:
    """A PushPullRequest as `parse_push_request` leaves it."""

    message: pb.PushPullRequest  # every field but the gradients
    gradients: list[tensors.RawTensor] = field(default_factory=list)
    error: str = ""  # set instead of raising, so that the handler can answer


def parse_push_request(data: bytes) -> PushRequest:
    """PushPullRequest bytes -> PushRequest; never raises (sets `error` instead)."""
    try:
        message, gradients = tensors.parse(data, pb.PushPullRequest, field=3)
    except tensors.TensorError as e:
        return PushRequest(pb.PushPullRequest(), error=str(e))
    return PushRequest(message, gradients)


def _serialize(reply) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


class Malformed:
    """Stands in for a request whose bytes did not parse, so that the handler can answer
    INVALID_ARGUMENT (gRPC's own answer to a raising deserializer is INTERNAL)."""

    def __init__(self, method: str, error: Exception):
        self.message = f"malformed {method}Request: {error or type(error).__name__}"


def _deserializer(method: str, parse_bytes: Callable[[bytes], object]) -> Callable[[bytes], object]:
    counter = metrics.RECEIVED_BYTES.labels(method)

    def parse(data: bytes):
        counter.inc(len(data))
        try:
            return parse_bytes(data)
        except Exception as e:  # noqa: BLE001 - any parse failure is the caller's bad bytes
            return Malformed(method, e)

    return parse


def _no_tensor(what: str, name: str) -> InvalidArgument:
    return InvalidArgument(
        f"{what} {name!r}: NamedTensor.tensor is missing or has dtype DTYPE_UNSPECIFIED "
        "(set tensor.dtype, tensor.shape and tensor.data)"
    )


def check_tensors_present(request) -> None:
    """A NamedTensor without a tensor gets a message that says so (before the generic
    tensor checks, which would only name the dtype)."""
    if isinstance(request, PushRequest):
        for t in request.gradients:
            if t.dtype == tensor_pb2.DTYPE_UNSPECIFIED:
                raise _no_tensor("gradient of", t.name)
        return
    for item in request.parameters:
        if not item.HasField("tensor") or item.tensor.dtype == tensor_pb2.DTYPE_UNSPECIFIED:
            raise _no_tensor("variable", item.name)


def _check_parsed(request) -> None:
    if isinstance(request, Malformed):
        raise InvalidArgument(request.message)


class ParameterServerServicer:
    """Turns calls into Shard methods and ShardErrors into status codes."""

    def __init__(self, shard: Shard):
        self.shard = shard

    def _refuse(self, method: str, context: grpc.ServicerContext, error: ShardError):
        metrics.REJECTED.labels(method, error.code).inc()
        log.info("call refused", method=method, code=error.code, reason=str(error))
        context.abort(getattr(grpc.StatusCode, error.code), str(error))

    def Register(self, request: pb.RegisterRequest, context) -> pb.RegisterResponse:
        try:
            _check_parsed(request)
            reply = self.shard.register(request.client_id, request.role)
        except ShardError as e:
            self._refuse("Register", context, e)
        log.info(
            "client registered", client=request.client_id, role=pb.ClientRole.Name(request.role)
        )
        return reply

    def Initialize(self, request: pb.InitializeRequest, context) -> pb.InitializeResponse:
        try:
            _check_parsed(request)
            check_tensors_present(request)
            applied, message, version = self.shard.initialize(request.client_id, request.parameters)
        except ShardError as e:
            self._refuse("Initialize", context, e)
        return pb.InitializeResponse(applied=applied, message=message, version=version)

    def PushPull(self, request: PushRequest, context) -> bytes:
        start = time.perf_counter()
        message = request.message
        try:
            _check_parsed(request)
            if request.error:
                raise InvalidArgument(request.error)
            check_tensors_present(request)
            result = self.shard.push(
                message.client_id,
                message.version,
                request.gradients,
                message.env_frames,
                message.session,
                message.sequence,
                message.parameters_dtype,
            )
        except ShardError as e:
            self._refuse("PushPull", context, e)
        metrics.SENT_BYTES.labels("PushPull").inc(len(result.reply))
        metrics.PUSHPULL_SECONDS.observe(time.perf_counter() - start)
        return result.reply

    def Pull(self, request: pb.PullRequest, context) -> bytes:
        start = time.perf_counter()
        try:
            _check_parsed(request)
            reply = self.shard.pull(request.have_version, request.parameters_dtype)
        except ShardError as e:
            self._refuse("Pull", context, e)
        metrics.SENT_BYTES.labels("Pull").inc(len(reply))
        metrics.PULL_SECONDS.observe(time.perf_counter() - start)
        return reply

    def Status(self, request: pb.StatusRequest, context) -> pb.StatusResponse:
        try:
            _check_parsed(request)
        except ShardError as e:
            self._refuse("Status", context, e)
        return self.shard.status()

    def register(self, server: grpc.Server) -> None:
        """Adds the service to a gRPC server (pass as `register` to rpc.make_server)."""
        parsers = {
            "Register": pb.RegisterRequest.FromString,
            "Initialize": pb.InitializeRequest.FromString,
            "PushPull": parse_push_request,  # keeps gradient bytes uncopied
            "Pull": pb.PullRequest.FromString,
            "Status": pb.StatusRequest.FromString,
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(self, name),
                request_deserializer=_deserializer(name, parse_bytes),
                response_serializer=_serialize,
            )
            for name, parse_bytes in parsers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
