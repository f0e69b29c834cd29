"""The learner's side of the parameter-server contract: every shard, in parallel.

`Shards` dials addresses/paramserver-K for K < ps (waiting for them to appear), registers,
lets learner 0 initialise the empty shards (others wait until they are initialised), pulls,
and pushes one gradient piece-set per shard with one fused `PushPull` each. A shard that is
unreachable is retried with exponential backoff, logged and counted; the learner does not
crash, it waits for the shard to come back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import structlog

from ba3c import rpc, tensors
from ba3c.config import Config
from ba3c.rundir import RunDir
from ba3c.sharding import Assignment
from ba3c.v1 import paramserver_pb2 as ps_pb
from ba3c.v1 import paramserver_pb2_grpc as ps_grpc
from services.learner import metrics

log = structlog.get_logger()

RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
)
MAX_BACKOFF = 10.0


class ShardMismatch(RuntimeError):
    """A shard holds variables that do not match this learner's model (other config?)."""


class Stopped(RuntimeError):
    """The learner is stopping."""


class _Shard:
    def __init__(self, index: int, address: str, token: str, max_bytes: int):
        self.index = index
        self.address = address
        self.channel = rpc.make_channel(address, token, max_bytes)
        self.stub = ps_grpc.ParameterServerStub(self.channel)
        self.version = 0
        self.frames_reported = 0  # env frames already sent to this shard


class Shards:
    def __init__(
        self,
        cfg: Config,
        run_dir: RunDir,
        token: str,
        client_id: str,
        layout: Assignment,
        stop: threading.Event,
    ):
        self.cfg = cfg
        self.run_dir = run_dir
        self.token = token
        self.client_id = client_id
        self.layout = layout
        self.stop = stop
        self.timeout = cfg.net.rpc_timeout
        self.max_bytes = rpc.message_limit(cfg.net.max_message_mb)
        self.grad_dtype = cfg.learner.grad_dtype
        # set on learner 0: () -> current parameters, to refill a shard that lost its own
        self.reinitialize: Callable[[], Mapping[str, np.ndarray]] | None = None
        self.shards: list[_Shard] = []
        self._pool = ThreadPoolExecutor(
            max_workers=layout.num_shards, thread_name_prefix="pushpull"
        )

    # -- joining ---------------------------------------------------------------------------
    def connect(self) -> None:
        """Waits for every shard's address and registers with it."""
        for k in range(self.layout.num_shards):
            if k >= len(self.shards):
                log.info("waiting for shard", shard=k)
                address = self.run_dir.wait_for_address("paramserver", k, stop=self.stop)
                self.shards.append(_Shard(k, address, self.token, self.max_bytes))
        for shard in self.shards:
            reply = self._retrying(
                shard,
                "Register",
                lambda s: s.stub.Register(
                    ps_pb.RegisterRequest(client_id=self.client_id, role=ps_pb.LEARNER),
                    timeout=self.timeout,
                ),
            )
            log.info(
                "registered with shard",
                shard=shard.index,
                address=shard.address,
                mode=ps_pb.Mode.Name(reply.mode),
                version=reply.version,
                initialized=reply.initialized,
            )

    def initialize(self, values: Mapping[str, np.ndarray], only: int | None = None) -> None:
        """Offers `values` to every shard, or to shard `only` (first writer wins: a no-op on
        initialised ones)."""
        pieces = self.layout.split(values)
        for shard in self.shards:
            if only is not None and shard.index != only:
                continue
            request = ps_pb.InitializeRequest(
                client_id=self.client_id,
                parameters=tensors.encode_named(
                    {n: np.asarray(a, np.float32) for n, a in pieces[shard.index].items()}
                ),
            )
            reply = self._retrying(
                shard, "Initialize", lambda s, r=request: s.stub.Initialize(r, timeout=self.timeout)
            )
            log.info(
                "initialize",
                shard=shard.index,
                applied=reply.applied,
                message=reply.message,
                version=reply.version,
            )

    def wait_initialized(self, poll: float = 0.2) -> dict[str, np.ndarray]:
        """Blocks until every shard is initialised; checks that its variables match this
        learner's model; returns the joined parameters."""
        pieces: dict[str, np.ndarray] = {}
        for shard in self.shards:
            while True:
                try:
                    reply = self._pull_one(shard)
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                if self.stop.wait(poll):
                    raise Stopped("stopped while waiting for shards to be initialised")
            values = tensors.decode_named(reply.parameters)
            self._check_variables(shard.index, {n: a.shape for n, a in values.items()})
            shard.version = reply.version
            pieces.update(values)
        metrics.VERSION.set(self.version)
        return self.layout.join(pieces)

    def _check_variables(self, index: int, have: Mapping[str, tuple[int, ...]]) -> None:
        have = {name: tuple(shape) for name, shape in have.items()}
        want = {p.name: p.shape for p in self.layout.shard_pieces(index)}
        if have != want:
            missing = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            wrong = sorted(n for n in set(want) & set(have) if want[n] != have[n])
            raise ShardMismatch(
                f"shard {index} holds other variables than this learner's model (is the run "
                f"configured with another model, fc_splits or ps?): missing {missing}, "
                f"unexpected {extra}, other shapes {wrong}"
            )

    # -- pulling and pushing -------------------------------------------------------------------
    def _pull_one(self, shard: _Shard) -> ps_pb.PullResponse:
        request = ps_pb.PullRequest(client_id=self.client_id, have_version=-1)
        return self._retrying(shard, "Pull", lambda s: s.stub.Pull(request, timeout=self.timeout))

    def push_pull(
        self, gradients: Mapping[str, np.ndarray], env_frames_total: int, samples: int
    ) -> dict[str, np.ndarray]:
        """Pushes each shard its gradient pieces in parallel; returns the joined parameters."""
        pieces = self.layout.split(gradients)
        futures = [
            self._pool.submit(self._push_one, shard, pieces[shard.index], env_frames_total, samples)
            for shard in self.shards
        ]
        joined: dict[str, np.ndarray] = {}
        for future in futures:
            joined.update(future.result())
        metrics.VERSION.set(self.version)
        return self.layout.join(joined)

    def _push_one(
        self, shard: _Shard, grads: Mapping[str, np.ndarray], env_frames_total: int, samples: int
    ) -> dict[str, np.ndarray]:
        frames = max(0, env_frames_total - shard.frames_reported)
        request = ps_pb.PushPullRequest(
            client_id=self.client_id,
            version=shard.version,
            env_frames=frames,
            samples=samples,
            gradients=tensors.encode_named(grads, self.grad_dtype),
        )
        metrics.PUSHPULL_BYTES.labels("sent").inc(request.ByteSize())
        try:
            reply = self._retrying(
                shard,
                "PushPull",
                lambda s: self._timed_push(s, request),
                give_up=(grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION),
            )
        except grpc.RpcError as e:
            # The shard refused this gradient (e.g. it restarted at another version): drop
            # it and carry on from the shard's current parameters.
            metrics.PUSHPULL_FAILURES.labels(e.code().name).inc()
            log.warning(
                "push refused, gradient dropped",
                shard=shard.index,
                code=e.code().name,
                details=e.details(),
            )
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # The shard came back empty (restarted without a checkpoint). Learner 0
                # gives it the parameters it holds; everyone waits until it has some.
                if self.reinitialize is not None:
                    self.initialize(self.reinitialize(), only=shard.index)
                self.wait_initialized()
            reply = self._pull_one(shard)
        else:
            shard.frames_reported += frames
            metrics.STALENESS.observe(reply.staleness)
        metrics.PUSHPULL_BYTES.labels("received").inc(reply.ByteSize())
        shard.version = reply.version
        return tensors.decode_named(reply.parameters)

    def _timed_push(self, shard: _Shard, request: ps_pb.PushPullRequest) -> ps_pb.PushPullResponse:
        with metrics.PUSHPULL_SECONDS.time():
            return shard.stub.PushPull(request, timeout=self.timeout)

    @property
    def version(self) -> int:
        return min((s.version for s in self.shards), default=0)

    # -- retries -------------------------------------------------------------------------------
    def _retrying(self, shard: _Shard, what: str, call, give_up=()):
        """Calls `call(shard)` until it succeeds; retries transport errors with backoff."""
        backoff = 0.2
        while True:
            try:
                return call(shard)
            except grpc.RpcError as e:
                code = e.code()
                if self.stop.is_set():
                    raise Stopped(f"stopped during {what} on shard {shard.index}") from None
                if code in give_up or code not in RETRYABLE:
                    raise
                metrics.PUSHPULL_FAILURES.labels(code.name).inc()
                log.warning(
                    "shard unreachable, retrying",
                    shard=shard.index,
                    call=what,
                    code=code.name,
                    details=e.details(),
                    retry_in=round(backoff, 2),
                )
            if self.stop.wait(backoff):
                raise Stopped(f"stopped while retrying {what} on shard {shard.index}")
            backoff = min(backoff * 2, MAX_BACKOFF)
            self._redial_if_moved(shard)

    def _redial_if_moved(self, shard: _Shard) -> None:
        """A restarted shard may publish a new address; follow it."""
        address = self.run_dir.read_address("paramserver", shard.index)
        if address and address != shard.address:
            log.info("shard moved", shard=shard.index, old=shard.address, new=address)
            shard.channel.close()
            replacement = _Shard(shard.index, address, self.token, self.max_bytes)
            shard.address, shard.channel, shard.stub = (
                address,
                replacement.channel,
                replacement.stub,
            )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for shard in self.shards:
            shard.channel.close()
