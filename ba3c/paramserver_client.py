"""The one client of the parameter-server contract (protos/ba3c/v1/paramserver.proto).

Learners and the evaluator both talk to every shard through `ParamServerClient`:

- **Finding shards.** Shard K is at RUN_DIR/addresses/paramserver-K. A shard without an
  address is waited for; after any failed call the address is read again, so a shard that
  restarted on another port is followed (new channel, Register again).
- **Checking them.** Register's answer must come from shard K and, once the shard is
  initialized, name exactly the variable pieces (and shapes) the shared `Assignment` gives
  it; so must every set of parameters pulled. A mismatch raises `ShardMismatch`.
- **Retrying.** One set of statuses that waiting may cure (`RETRYABLE`), one backoff
  (`ba3c.backoff`, shared with the simulator pools), one log line per change of reason,
  every failed attempt counted through `Hooks.failed`. Other statuses raise
  `ParamServerError` with the shard, its address and the server's message. Setting `stop`
  cancels a call in flight and ends every wait with `Stopped`.
- **Exactly-once pushes.** Every PushPull carries an idempotency key: this client's
  `session` (random, one per client object) and a per-shard `sequence` (1, 2, ...). A
  push whose reply was lost (deadline, broken connection) is retried with the same request,
  key included, so a shard that applied the first attempt answers the retry with that
  outcome instead of applying the gradient (and counting its env frames) again.
- **Parallel.** PushPull and Pull go to all shards at once, one thread per shard.
- **Parameters in bfloat16** (`params_dtype="bfloat16"`): replies carry the shards'
  float32 values rounded to bfloat16, half the bytes; they are widened to float32 here.
  The shards keep float32 and apply every update to it.

What a service counts (Prometheus) it passes in as `Hooks`; the core holds no metrics.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np
import structlog

from ba3c import rpc, tensors
from ba3c.backoff import Backoff, Stopped, retry
from ba3c.rundir import RunDir
from ba3c.sharding import Assignment
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc

log = structlog.get_logger()
SERVICE = "ba3c.v1.ParameterServer"
T = TypeVar("T")

__all__ = [
    "RETRYABLE",
    "Hooks",
    "ParamServerClient",
    "ParamServerError",
    "ShardMismatch",
    "Snapshot",
    "Stopped",
    "should_retry",
]

# Statuses that waiting may cure: the shard is down, frozen, restarting or busy.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
# A push the shard refused (bad version, empty shard, sequence out of order): the gradient
# is dropped and the client carries on from the shard's current parameters.
PUSH_REFUSED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
    }
)
STOP_POLL = 0.1  # seconds between looks at `stop` while a call is in flight
ADDRESS_CHECK = 1.0  # seconds between reads of a healthy shard's address file
CONTROL_TIMEOUT = 10.0  # longest deadline of Register and Status (no tensors travel)


def should_retry(code: grpc.StatusCode, wait_uninitialized: bool = False) -> bool:
    """Whether a call that failed with `code` is worth another attempt. A shard that is
    not initialized yet (FAILED_PRECONDITION) is waited for only where asked."""
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return wait_uninitialized
    return code in RETRYABLE


class ParamServerError(RuntimeError):
    """A problem with a shard that waiting will not fix; the message says what."""


class ShardMismatch(ParamServerError):
    """A shard holds other variables than this process's model (another config?)."""


class _NoAddress(Exception):
    """The shard has not published its address (yet, or again)."""


class _Moved(Exception):
    """The shard withdrew or changed its address while a call to it was waiting."""


def _ignore(*_args) -> None:
    return None


@dataclass
class Hooks:
    """What a service counts about its calls; every field is optional."""

    # every failed attempt, by status code name ("UNAVAILABLE", ...)
    failed: Callable[[str], None] = _ignore
    # every answered PushPull: (bytes sent, bytes received, the reply without its
    # parameters, seconds of the answered attempt)
    pushed: Callable[[int, int, pb.PushPullResponse, float], None] = _ignore
    # every answered Pull: (the reply without its parameters, bytes received, seconds)
    pulled: Callable[[pb.PullResponse, int, float], None] = _ignore


@dataclass(frozen=True)
class Snapshot:
    weights: dict[str, np.ndarray]  # {variable: array}, joined from every shard
    versions: tuple[int, ...]  # per shard
    env_frames: int  # the largest shard counter (every shard counts all frames)

    @property
    def version(self) -> int:
        """The version every shard has reached (shards move together; this is the lowest)."""
        return min(self.versions)


class _Shard:
    """One shard's connection and what this client knows of it."""

    def __init__(self, index: int):
        self.index = index
        self.address: str | None = None
        self.channel: grpc.Channel | None = None
        self.stub: pb_grpc.ParameterServerStub | None = None
        # PushPull and Pull as bytes in, bytes out: the codec's zero-copy path
        self.raw: dict[str, grpc.UnaryUnaryMultiCallable] = {}
        self.packer: tensors.Packer | None = None  # this shard's gradients, one buffer
        self.registered = False
        self.address_checked = 0.0  # time.monotonic() of the last read of its address file
        self.version = 0  # version of the parameters last received (pushes are computed at it)
        self.pieces: dict[str, np.ndarray] = {}
        self.pieces_version = -1  # version of `pieces`; -1: ask for the parameters
        self.env_frames = 0
        self.frames_reported = 0  # env frames already sent to this shard
        self.sequence = 0  # of the last push (idempotency key)
        self.waiting_for: str | None = None  # the reason last logged

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = self.stub = None
        self.raw = {}
        self.registered = False


class ParamServerClient:
    """Every shard of a run, as a learner (`pb.LEARNER`) or the evaluator (`pb.EVALUATOR`)."""

    def __init__(
        self,
        run_dir: RunDir,
        token: str,
        assignment: Assignment,
        client_id: str,
        role: int,
        stop: threading.Event,
        rpc_timeout: float,
        max_message_bytes: int,
        grad_dtype: str = "float32",
        hooks: Hooks | None = None,
        params_dtype: str = "float32",
    ):
        self.run_dir = run_dir
        self.token = token
        self.assignment = assignment
        self.client_id = client_id
        self.role = role
        self.stop = stop
        self.rpc_timeout = rpc_timeout
        self.max_message_bytes = max_message_bytes
        self.grad_dtype = grad_dtype
        # what the replies' parameters should come in; decoded by their own dtype anyway
        self.params_dtype = tensors.dtype_from_name(params_dtype)
        self.hooks = hooks or Hooks()
        self.session = uuid.uuid4().hex  # one per client object: a restarted process is new
        # learner 0 sets this: () -> current parameters, to refill a shard that lost its own
        self.reinitialize: Callable[[], Mapping[str, np.ndarray]] | None = None
        self.shards = [_Shard(k) for k in range(assignment.num_shards)]
        self._expected = {
            k: {p.name: p.shape for p in assignment.shard_pieces(k)}
            for k in range(assignment.num_shards)
        }
        self._closed = False
        self._pool = ThreadPoolExecutor(
            max_workers=assignment.num_shards, thread_name_prefix="paramserver"
        )

    # -- joining -------------------------------------------------------------------------------
    def connect(self) -> None:
        """Waits for every shard's address and registers with it."""
        for shard in self.shards:
            self._retrying(shard, "Register", lambda s: None)

    def initialize(self, values: Mapping[str, np.ndarray], only: int | None = None) -> None:
        """Offers `values` to every shard, or to shard `only` (first writer wins: a no-op on
        initialized ones)."""
        pieces = self.assignment.split(values)
        for shard in self.shards:
            if only is not None and shard.index != only:
                continue
            request = pb.InitializeRequest(
                client_id=self.client_id,
                parameters=tensors.encode_named(
                    {n: np.asarray(a, np.float32) for n, a in pieces[shard.index].items()}
                ),
            )
            reply = self._retrying(
                shard, "Initialize", lambda s, r=request: self._invoke(s, "Initialize", r)
            )
            log.info(
                "initialize",
                shard=shard.index,
                applied=reply.applied,
                message=reply.message,
                version=reply.version,
            )

    def wait_initialized(self) -> dict[str, np.ndarray]:
        """Blocks until every shard is initialized; returns the joined parameters (checked
        against the model)."""
        for future in [self._pool.submit(self._pull, s, True) for s in self.shards]:
            future.result()
        return self._joined()

    # -- the learner ---------------------------------------------------------------------------
    def push_pull(
        self, gradients: Mapping[str, np.ndarray], env_frames_total: int, samples: int
    ) -> dict[str, np.ndarray]:
        """Pushes each shard its gradient pieces in parallel; returns the joined parameters.
        `env_frames_total` is this client's running total: each shard is sent what it has
        not been told yet."""
        pieces = self.assignment.split(gradients)
        futures = [
            self._pool.submit(self._push, s, pieces[s.index], env_frames_total, samples)
            for s in self.shards
        ]
        for future in futures:
            future.result()
        return self._joined()

    @property
    def version(self) -> int:
        """The lowest version among the shards' parameters this client holds."""
        return min(s.version for s in self.shards)

    # -- the evaluator -------------------------------------------------------------------------
    def read(self) -> Snapshot:
        """Every shard's parameters (pulled only where the version moved), in parallel."""
        for future in [self._pool.submit(self._pull, s, False) for s in self.shards]:
            future.result()
        return Snapshot(
            weights=self._joined(),
            versions=tuple(s.version for s in self.shards),
            env_frames=max(s.env_frames for s in self.shards),
        )

    def versions(self) -> tuple[int, ...]:
        """Every shard's current version, from Status (no parameters travel)."""
        return tuple(
            self._retrying(
                s, "Status", lambda s: self._invoke(s, "Status", pb.StatusRequest())
            ).version
            for s in self.shards
        )

    def close(self) -> None:
        """Cancels calls in flight (set `stop` first so they end with Stopped)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        for shard in self.shards:
            shard.close()

    # -- one shard: pulling and pushing ----------------------------------------------------------
    def _pull(self, shard: _Shard, always: bool) -> None:
        have = -1 if always or not shard.pieces else shard.pieces_version
        request = pb.PullRequest(
            client_id=self.client_id, have_version=have, parameters_dtype=self.params_dtype
        ).SerializeToString()
        started = [0.0]

        def call(s: _Shard) -> bytes:
            started[0] = time.perf_counter()
            return self._invoke(s, "Pull", request)

        data = self._retrying(shard, "Pull", call, wait_uninitialized=True)
        reply, parameters = self._parse(shard, data, pb.PullResponse)
        self.hooks.pulled(reply, len(data), time.perf_counter() - started[0])
        shard.env_frames = reply.env_frames
        if reply.unchanged and reply.version == shard.pieces_version and shard.pieces:
            return
        self._take(shard, parameters, reply.version)

    def _push(
        self,
        shard: _Shard,
        grads: Mapping[str, np.ndarray],
        env_frames_total: int,
        samples: int,
    ) -> None:
        frames = max(0, env_frames_total - shard.frames_reported)
        shard.sequence += 1
        if shard.packer is None:
            shard.packer = tensors.Packer(self._expected[shard.index], self.grad_dtype)
        # the small fields, then the gradients written straight into one reused buffer
        request = shard.packer.serialize(
            pb.PushPullRequest(
                client_id=self.client_id,
                version=shard.version,
                env_frames=frames,
                samples=samples,
                session=self.session,
                sequence=shard.sequence,
                parameters_dtype=self.params_dtype,
            ),
            grads,
        )
        started = [0.0]

        def call(s: _Shard) -> bytes:
            # the same request, key included, on every attempt: exactly once
            started[0] = time.perf_counter()
            return self._invoke(s, "PushPull", request)

        try:
            data = self._retrying(shard, "PushPull", call, give_up=PUSH_REFUSED)
        except grpc.RpcError as e:
            self._refused(shard, e)
            return
        reply, parameters = self._parse(shard, data, pb.PushPullResponse)
        self.hooks.pushed(len(request), len(data), reply, time.perf_counter() - started[0])
        shard.frames_reported += frames
        shard.env_frames = reply.env_frames
        self._take(shard, parameters, reply.version)

    def _refused(self, shard: _Shard, error: grpc.RpcError) -> None:
        """The shard refused a push (e.g. it restarted at another version, or empty): the
        gradient is dropped and we carry on from the shard's current parameters."""
        self.hooks.failed(error.code().name)
        log.warning(
            "push refused, gradient dropped",
            shard=shard.index,
            code=error.code().name,
            details=error.details(),
        )
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION and self.reinitialize:
            # the shard came back empty (restarted without a checkpoint): learner 0 gives
            # it the parameters it holds; everyone else waits until it has some
            self.initialize(self.reinitialize(), only=shard.index)
        self._pull(shard, always=True)

    @staticmethod
    def _parse(shard: _Shard, data: bytes, message_type):
        """(the reply without its parameters, its parameters as RawTensors over `data`)."""
        try:
            return tensors.parse(data, message_type)
        except tensors.TensorError as e:
            raise ParamServerError(f"paramserver-{shard.index} sent a bad reply: {e}") from None

    def _take(self, shard: _Shard, named, version: int) -> None:
        """Keeps the shard's parameters: read-only views of the reply's bytes (no copy)."""
        try:
            pieces = tensors.decode_named(named)
        except tensors.TensorError as e:
            raise ParamServerError(f"paramserver-{shard.index} sent a bad tensor: {e}") from None
        self._check(shard.index, {n: a.shape for n, a in pieces.items()})
        shard.pieces, shard.pieces_version, shard.version = pieces, version, version

    def _joined(self) -> dict[str, np.ndarray]:
        pieces: dict[str, np.ndarray] = {}
        for shard in self.shards:
            pieces.update(shard.pieces)
        return self.assignment.join(pieces)

    def _check(self, index: int, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Shard `index` must hold exactly the pieces the assignment gives it, in their
        shapes."""
        expected = self._expected[index]
        got = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        if got == expected:
            return
        missing = sorted(set(expected) - set(got))
        unknown = sorted(set(got) - set(expected))
        wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        problems = [f"missing {missing}"] if missing else []
        problems += [f"unknown {unknown}"] if unknown else []
        problems += [
            f"{n} has shape {list(got[n])}, the model expects {list(expected[n])}" for n in wrong
        ]
        raise ShardMismatch(
            f"paramserver-{index} holds parameters that do not fit this model ("
            + "; ".join(problems)
            + "); is this process using the run's config.toml (model, fc_splits, ps)?"
        )

    # -- one shard: connecting and retrying -------------------------------------------------------
    def _retrying(
        self,
        shard: _Shard,
        what: str,
        call: Callable[[_Shard], T],
        wait_uninitialized: bool = False,
        give_up: frozenset[grpc.StatusCode] = frozenset(),
    ) -> T:
        """`call(shard)` on a registered shard, retried with backoff while what failed may
        pass. A status in `give_up` is raised as the RpcError; other statuses that waiting
        will not cure raise ParamServerError."""

        def attempt() -> T:
            if self.stop.is_set() or self._closed:
                raise Stopped(f"stopped before {what} on shard {shard.index}")
            try:
                self._ready(shard)
                result = call(shard)
            except grpc.RpcError as e:
                if self.stop.is_set():
                    raise Stopped(f"stopped during {what} on shard {shard.index}") from None
                code = e.code()
                if code in give_up or should_retry(code, wait_uninitialized):
                    raise
                raise ParamServerError(
                    f"paramserver-{shard.index} at {shard.address}: {what} failed with "
                    f"{code.name}: {e.details()}"
                ) from None
            if shard.waiting_for is not None:
                log.info("shard ready", shard=shard.index, address=shard.address)
                shard.waiting_for = None
            return result

        def retryable(e: Exception) -> bool:
            if isinstance(e, (_NoAddress, _Moved)):
                return True
            return isinstance(e, grpc.RpcError) and e.code() not in give_up

        return retry(
            attempt,
            retryable,
            self.stop.wait,
            Backoff(),
            lambda e, pause: self._failed(shard, what, e, pause),
        )

    def _failed(self, shard: _Shard, what: str, error: Exception, pause: float) -> None:
        """After a failed attempt: count it, say so once per reason, register again (and
        read the address again) before the next attempt."""
        shard.registered = False
        if isinstance(error, _NoAddress):
            reason, details, event = "no address in RUN_DIR/addresses/ yet", "", "waiting for shard"
        elif isinstance(error, _Moved):  # we cancelled the call: count it as such
            reason, details, event = "CANCELLED", str(error), "shard unreachable, retrying"
            self.hooks.failed(reason)
        else:
            assert isinstance(error, grpc.RpcError)
            reason, details = error.code().name, error.details()
            self.hooks.failed(reason)
            event = (
                "waiting for shard"
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION
                else "shard unreachable, retrying"
            )
        if shard.waiting_for != reason:
            say = log.info if event == "waiting for shard" else log.warning
            say(
                event,
                shard=shard.index,
                call=what,
                reason=reason,
                details=details,
                retry_in=round(pause, 2),
            )
            shard.waiting_for = reason

    def _ready(self, shard: _Shard) -> None:
        """Dials (the address in RUN_DIR, followed if it changed) and registers if needed.
        The address file is read before every call that follows a failure, and at most
        once a second otherwise: a shard that withdrew or moved is noticed even by a
        client whose calls still wait for their deadline."""
        now = time.monotonic()
        if shard.registered and now - shard.address_checked < ADDRESS_CHECK:
            return
        address = self.run_dir.read_address("paramserver", shard.index)
        shard.address_checked = now
        if address is None:
            shard.registered = False
            raise _NoAddress
        if shard.registered and address == shard.address:
            return
        shard.registered = False
        if address != shard.address or shard.stub is None:
            if shard.address is not None and address != shard.address:
                log.info("shard moved", shard=shard.index, old=shard.address, new=address)
            shard.close()
            shard.address = address
            shard.channel = rpc.make_channel(address, self.token, self.max_message_bytes)
            shard.stub = pb_grpc.ParameterServerStub(shard.channel)
            shard.raw = {
                method: shard.channel.unary_unary(f"/{SERVICE}/{method}")
                for method in ("PushPull", "Pull")
            }
        reply = self._invoke(
            shard, "Register", pb.RegisterRequest(client_id=self.client_id, role=self.role)
        )
        if reply.shard_index != shard.index:
            raise ParamServerError(
                f"{address} (addresses/paramserver-{shard.index}) says it is shard "
                f"{reply.shard_index}"
            )
        if reply.initialized:
            self._check(shard.index, {v.name: tuple(v.shape) for v in reply.variables})
        # a restarted shard may hold other values under the same version: pull them all
        shard.pieces_version = -1
        shard.registered = True
        log.info(
            "registered with shard",
            shard=shard.index,
            address=address,
            mode=pb.Mode.Name(reply.mode),
            version=reply.version,
            initialized=reply.initialized,
        )

    def _invoke(self, shard: _Shard, method: str, request):
        """One unary call with the rpc deadline, cancelled (raising Stopped) when `stop` is
        set instead of waiting out its deadline for a server that went away."""
        stub = shard.stub
        if stub is None:  # closed under us
            raise Stopped(f"client closed during {method} on shard {shard.index}")
        timeout = self.rpc_timeout
        if method in ("Register", "Status"):
            timeout = min(timeout, CONTROL_TIMEOUT)
        if isinstance(request, bytes):  # serialised by the codec; the reply stays bytes
            future = shard.raw[method].future(request, timeout=timeout)
        else:
            future = getattr(stub, method).future(request, timeout=timeout)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(STOP_POLL):
            if self.stop.is_set():
                future.cancel()
                raise Stopped(f"stopped during {method} on shard {shard.index}")
            if time.monotonic() - shard.address_checked >= ADDRESS_CHECK:
                shard.address_checked = time.monotonic()
                if self.run_dir.read_address("paramserver", shard.index) != shard.address:
                    # calls wait for a server that is gone until their deadline: don't
                    future.cancel()
                    raise _Moved("its address was withdrawn or changed; call cancelled")
        return future.result()
