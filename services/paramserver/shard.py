"""The state of one parameter-server shard and the rules that change it.

A `Shard` holds the parameters of its variable pieces, the optimizer state, the version
(global step; also the learning-rate schedule's position), the env-frame counter and,
in sync mode, the open round. All of it is guarded by one lock; the servicer only turns
gRPC messages into calls here and `ShardError`s into status codes. Every check of a
request happens before anything is changed, so a refused call changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import structlog

from ba3c import tensors
from ba3c.checkpoint import Checkpoint
from ba3c.machine import available_cores
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import tensor_pb2
from services.paramserver import kernels, metrics
from services.paramserver.dedupe import Keys, KeyTooOld, Outcome
from services.paramserver.leases import Leases
from services.paramserver.optimizers import Hyper, Optimizer
from services.paramserver.sync import COMPLETE, STALE, SURPLUS, TIMED_OUT, Round, Rounds

log = structlog.get_logger()


class ShardError(Exception):
    """A refused call; each subclass's `code` is the name of the gRPC status code to answer with."""

    code: str


class InvalidArgument(ShardError):
    code = "INVALID_ARGUMENT"


class NotInitialized(ShardError):
    code = "FAILED_PRECONDITION"


class ShuttingDown(ShardError):
    code = "UNAVAILABLE"


class OutOfOrder(ShardError):
    code = "ABORTED"


@dataclass(frozen=True)
class Settings:
    """What a shard needs from the configuration."""

    index: int = 0
    sync: bool = False
    replicas: int = 1
    sync_timeout: float = 10.0
    lease_seconds: float = 30.0
    max_staleness: int = 0
    staleness_aware: bool = False
    save_every: int = 0
    hyper: Hyper = Hyper()

    @classmethod
    def from_config(cls, cfg, index: int) -> Settings:
        ps = cfg.paramserver
        return cls(
            index=index,
            sync=ps.use_sync,
            replicas=ps.replicas_to_aggregate,
            sync_timeout=ps.sync_timeout,
            lease_seconds=ps.lease_seconds,
            max_staleness=ps.max_staleness,
            staleness_aware=ps.staleness_aware,
            save_every=ps.save_every,
            hyper=Hyper.from_config(cfg.optim),
        )


@dataclass(frozen=True)
class PushResult:
    outcome: int  # pb.PushOutcome
    version: int
    staleness: int
    reply: bytes  # the serialised PushPullResponse (see Shard._reply)


def _describe(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


def check_initial_values(named: Iterable[tensor_pb2.NamedTensor]) -> dict[str, np.ndarray]:
    """Initialize's parameters -> {name: float32 array}; InvalidArgument if unusable."""
    named = list(named)
    if not named:
        raise InvalidArgument("Initialize needs at least one variable, got none")
    try:
        arrays = tensors.decode_named(named)
    except tensors.TensorError as e:
        raise InvalidArgument(str(e)) from None
    for item in named:
        name = item.name
        if not name:
            raise InvalidArgument("a variable has an empty name")
        if item.tensor.dtype != tensor_pb2.FLOAT32:
            raise InvalidArgument(
                f"variable {name!r}: parameters must be float32, got "
                f"{tensors.dtype_name(item.tensor.dtype)}"
            )
        if not np.isfinite(arrays[name]).all():
            raise InvalidArgument(f"variable {name!r}: initial value contains NaN or Inf")
    return arrays


GRADIENT_DTYPES = (tensor_pb2.FLOAT32, tensor_pb2.BFLOAT16, tensor_pb2.FLOAT16)
PARAMETERS_FIELD = 3  # `repeated NamedTensor parameters = 3` in PushPull's and Pull's replies
FLOAT32, BFLOAT16 = tensor_pb2.FLOAT32, tensor_pb2.BFLOAT16


def reply_dtype(requested: int) -> int:
    """The element type of a reply's parameters: FLOAT32 (also for DTYPE_UNSPECIFIED) or
    BFLOAT16; InvalidArgument for anything else."""
    if requested in (tensor_pb2.DTYPE_UNSPECIFIED, FLOAT32):
        return FLOAT32
    if requested == BFLOAT16:
        return BFLOAT16
    raise InvalidArgument(
        f"parameters_dtype must be FLOAT32 or BFLOAT16, got {tensors.dtype_name(requested)}"
    )


def check_gradients(
    specs: Mapping[str, tuple[int, ...]], raw: Iterable[tensors.RawTensor]
) -> dict[str, np.ndarray]:
    """PushPull's gradients -> {name: array}; InvalidArgument naming the variable if any is
    unknown, missing, repeated, of the wrong dtype or shape, or not finite. Arrays are
    read-only views of the request's bytes, bfloat16 left as its uint16 bit patterns (the
    compiled update widens each element as it reads it)."""
    grads: dict[str, np.ndarray] = {}
    for t in raw:
        name = t.name
        if name not in specs:
            raise InvalidArgument(f"unknown variable {name!r}: this shard holds {_describe(specs)}")
        if name in grads:
            raise InvalidArgument(f"variable {name!r} appears twice")
        if t.dtype not in GRADIENT_DTYPES:
            raise InvalidArgument(
                f"variable {name!r}: gradient dtype "
                f"{tensors.dtype_name(t.dtype)} is not allowed "
                "(use float32, bfloat16 or float16)"
            )
        if tuple(t.shape) != specs[name]:
            raise InvalidArgument(
                f"variable {name!r}: gradient shape {list(t.shape)} does "
                f"not match the variable's {list(specs[name])}"
            )
        try:
            g = tensors.decode(t, widen_bfloat16=False)
        except tensors.TensorError as e:
            raise InvalidArgument(f"variable {name!r}: {e}") from None
        # every variable is checked before any is updated, so a refused push changes nothing
        if not kernels.all_finite(kernels.as_kernel_input(g)):
            raise InvalidArgument(f"variable {name!r}: gradient contains NaN or Inf")
        grads[name] = g
    missing = [n for n in specs if n not in grads]
    if missing:
        raise InvalidArgument(
            f"missing gradients for {_describe(missing)} (every variable of "
            "the shard must be pushed)"
        )
    return grads


def optimizer_threads() -> int:
    """Threads for the optimizer: half the CPUs this process may use (Slurm's cpuset), at
    most 4; on a small shared machine one thread is faster."""
    cpus = available_cores()
    return max(1, min(4, cpus // 2)) if cpus >= 4 else 1


class Shard:
    """One shard's state. Thread-safe; sync-mode pushes block until their round is applied."""

    def __init__(
        self,
        settings: Settings,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self._on_checkpoint = on_checkpoint
        self._cond = threading.Condition()
        self._leases = Leases(settings.lease_seconds, clock)
        self._params: dict[str, np.ndarray] | None = None
        self._specs: dict[str, tuple[int, ...]] = {}
        self._optimizer: Optimizer | None = None
        self._sums: dict[str, np.ndarray] = {}  # a sync round's sum of pushes
        self._rounds = Rounds(
            settings.replicas, settings.sync_timeout, self._leases, clock, self._sums
        )
        self._replies: dict[tuple, bytes] = {}  # replies built for the current version
        self._replies_version = -1
        self._keys = Keys()  # outcomes of recent idempotency keys (exactly-once pushes)
        self._closing = False
        self.version = 0
        self.env_frames = 0
        self.pushes_applied = 0
        self.pushes_dropped = 0
        self.pushes_repeated = 0
        self.checkpoint_version = -1
        self.initialized_by = ""
        metrics.CHECKPOINT_VERSION.set(-1)

    # -- setting the values -----------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self._params is not None

    def _install(self, params: dict[str, np.ndarray]) -> None:
        self._params = {n: np.array(a, dtype=np.float32) for n, a in params.items()}
        self._specs = {n: a.shape for n, a in self._params.items()}
        self._optimizer = Optimizer(self.settings.hyper, self._specs, optimizer_threads())
        self._sums.clear()  # the same dict Rounds holds
        self._sums.update({n: np.empty(s, np.float32) for n, s in self._specs.items()})
        metrics.PARAMETERS.set(sum(a.size for a in self._params.values()))

    def initialize(
        self, client_id: str, named: Iterable[tensor_pb2.NamedTensor]
    ) -> tuple[bool, str, int]:
        """First writer wins: (applied, message, version)."""
        arrays = check_initial_values(named)
        with self._cond:
            if self.initialized:
                return (
                    False,
                    f"already initialized at version {self.version} ({self.initialized_by})",
                    self.version,
                )
            self._install(arrays)
            self.initialized_by = f"by {client_id or 'an anonymous client'}"
            size = sum(a.size for a in arrays.values())
            message = (
                f"initialized with {len(arrays)} variables ({size} parameters) "
                f"{self.initialized_by}"
            )
            log.info("shard initialized", client=client_id, variables=len(arrays), parameters=size)
            return True, message, self.version

    def restore(self, ckpt: Checkpoint) -> None:
        """Resumes from a checkpoint: parameters, optimizer state, version, frames."""
        with self._cond:
            self._install(ckpt.parameters)
            assert self._optimizer is not None
            if ckpt.optimizer == self._optimizer.name:
                self._optimizer.load_state(ckpt.optimizer_step, ckpt.slots)
            else:
                log.warning(
                    "checkpoint has another optimizer's state; starting it afresh",
                    checkpoint_optimizer=ckpt.optimizer,
                    optimizer=self._optimizer.name,
                )
            self.version = ckpt.version
            self.env_frames = ckpt.env_frames
            self.checkpoint_version = ckpt.version
            self.pushes_applied = int(ckpt.extra.get("pushes_applied", 0))
            self.pushes_dropped = int(ckpt.extra.get("pushes_dropped", 0))
            self.initialized_by = f"restored from checkpoint {ckpt.path}"
            metrics.VERSION.set(self.version)
            metrics.ENV_FRAMES.set(self.env_frames)
            metrics.CHECKPOINT_VERSION.set(ckpt.version)

    # -- registering ------------------------------------------------------------------------
    def register(self, client_id: str, role: int) -> pb.RegisterResponse:
        if not client_id:
            raise InvalidArgument("client_id is empty; use a stable name such as 'learner-0'")
        if role not in (pb.LEARNER, pb.EVALUATOR):
            raise InvalidArgument("role must be LEARNER or EVALUATOR")
        with self._cond:
            if role == pb.LEARNER:
                self._leases.renew(client_id)
                metrics.LIVE_LEARNERS.set(len(self._leases.live()))
            return pb.RegisterResponse(
                shard_index=self.settings.index,
                mode=self._mode,
                replicas_to_aggregate=self.settings.replicas,
                version=self.version,
                initialized=self.initialized,
                variables=[
                    tensor_pb2.VariableSpec(name=n, dtype=tensor_pb2.FLOAT32, shape=s)
                    for n, s in self._specs.items()
                ],
                lease_seconds=self.settings.lease_seconds,
            )

    @property
    def _mode(self) -> int:
        return pb.SYNC if self.settings.sync else pb.ASYNC

    # -- pushing and pulling ------------------------------------------------------------------
    def _check_ready(self) -> None:
        if self._closing:
            raise ShuttingDown("the shard is shutting down; retry when it is back")
        if not self.initialized:
            raise NotInitialized(
                "the shard is not initialized yet: learner 0 must call Initialize first"
            )

    def push(
        self,
        client_id: str,
        version: int,
        raw: Iterable[tensors.RawTensor],
        env_frames: int = 0,
        session: str = "",
        sequence: int = 0,
        parameters_dtype: int = FLOAT32,
    ) -> PushResult:
        """Handles one PushPull; in sync mode blocks until the push's round is applied.
        A repeated idempotency key (session, sequence) gets the first attempt's outcome.
        The reply's parameters are float32, or bfloat16 if `parameters_dtype` asks."""
        dtype = reply_dtype(parameters_dtype)
        if not client_id:
            raise InvalidArgument("client_id is empty; use a stable name such as 'learner-0'")
        if env_frames < 0:
            raise InvalidArgument(f"env_frames must be >= 0, got {env_frames}")
        if version < 0:
            raise InvalidArgument(f"version must be >= 0, got {version}")
        key = (client_id, session, sequence)
        with self._cond:
            self._check_ready()
            specs = self._specs
            repeat = self._repeat(*key, dtype)
            if repeat is not None:
                return repeat
        grads = check_gradients(specs, raw)
        with self._cond:
            self._check_ready()
            repeat = self._repeat(*key, dtype)  # another attempt may have been handled meanwhile
            if repeat is not None:
                return repeat
            if version > self.version:
                raise InvalidArgument(
                    f"version {version} is ahead of the shard's version {self.version} (did "
                    "the shard restart from an older checkpoint? Pull and compute again)"
                )
            self._leases.renew(client_id)
            metrics.LIVE_LEARNERS.set(len(self._leases.live()))
            self.env_frames += env_frames
            metrics.ENV_FRAMES.set(self.env_frames)
            staleness = self.version - version
            metrics.STALENESS.observe(staleness)
            if self.settings.sync:
                return self._push_sync(key, grads, staleness, dtype)
            return self._push_async(key, grads, staleness, dtype)

    def _repeat(self, client_id: str, session: str, sequence: int, dtype: int) -> PushResult | None:
        """The answer to a key handled before (waiting for it if its sync round is still
        open); None for a push to handle. Call with the lock held."""
        try:
            first = self._keys.lookup(client_id, session, sequence)
        except KeyTooOld as e:
            raise OutOfOrder(str(e)) from None
        if first is None:
            return None
        self._leases.renew(client_id)
        if first.round is not None:
            self._await_round(first.round)
        self.pushes_repeated += 1
        metrics.PUSHES_REPEATED.inc()
        log.info(
            "repeated push answered with its first outcome",
            client=client_id,
            sequence=sequence,
            outcome=pb.PushOutcome.Name(first.outcome),
        )
        return self._current(first.outcome, first.staleness, dtype, repeated=True)

    def _drop(self, reason: str) -> None:
        self.pushes_dropped += 1
        metrics.PUSHES_DROPPED.labels(reason).inc()

    def _current(
        self, outcome: int, staleness: int, dtype: int = FLOAT32, repeated: bool = False
    ) -> PushResult:
        return PushResult(
            outcome,
            self.version,
            staleness,
            self._reply(
                ("push", outcome, staleness, self.env_frames, repeated),
                dtype,
                lambda parts: tensors.serialize(
                    pb.PushPullResponse(
                        outcome=outcome,
                        version=self.version,
                        staleness=staleness,
                        env_frames=self.env_frames,
                        repeated=repeated,
                    ),
                    parts,
                ),
            ),
        )

    def _push_async(
        self,
        key: tuple[str, str, int],
        grads: Mapping[str, np.ndarray],
        staleness: int,
        dtype: int,
    ) -> PushResult:
        bound = self.settings.max_staleness
        if bound and staleness > bound:
            self._keys.record(*key, Outcome(pb.DROPPED_STALE, staleness))
            self._drop("stale")
            return self._current(pb.DROPPED_STALE, staleness, dtype)
        self._keys.record(*key, Outcome(pb.APPLIED, staleness))
        lr_scale = 1.0 / max(1, staleness) if self.settings.staleness_aware else 1.0
        self._apply(grads, pushes=1, lr_scale=lr_scale)
        return self._current(pb.APPLIED, staleness, dtype)

    def _push_sync(
        self,
        key: tuple[str, str, int],
        grads: Mapping[str, np.ndarray],
        staleness: int,
        dtype: int,
    ) -> PushResult:
        client_id = key[0]
        joined, rnd = self._rounds.offer(client_id, self.version, staleness, grads)
        if rnd is None or joined == STALE:
            self._keys.record(*key, Outcome(pb.DROPPED_STALE, staleness))
            self._drop("stale")
            return self._current(pb.DROPPED_STALE, staleness, dtype)
        if joined == SURPLUS:
            self._keys.record(*key, Outcome(pb.DROPPED_SURPLUS, staleness, rnd))
            self._drop("surplus")
            outcome = pb.DROPPED_SURPLUS
        else:
            self._keys.record(*key, Outcome(pb.APPLIED, staleness, rnd))
            metrics.ROUND_WAITING.set(rnd.count)
            outcome = pb.APPLIED
        rnd.reply_dtypes.add(dtype)
        self._await_round(rnd)
        assert rnd.result is not None
        if outcome != pb.APPLIED:
            return self._current(outcome, staleness, dtype)
        new_version, replies = rnd.result
        return PushResult(outcome, new_version, staleness, replies[dtype])

    def _await_round(self, rnd: Round) -> None:
        """Waits (lock released) until `rnd` is applied, applying it when it is full or
        its time is up; whichever waiting caller notices first does."""
        while not rnd.done:
            step = self._rounds.next_step(rnd)
            if step in (COMPLETE, TIMED_OUT):
                self._close_round(rnd, timed_out=step == TIMED_OUT)
                break
            # wake up now and then: leases may expire while we wait
            self._cond.wait(min(float(step), 0.25))

    def _close_round(self, rnd: Round, timed_out: bool) -> None:
        missing = self._rounds.close(rnd, timed_out)
        if timed_out:
            metrics.ROUND_TIMEOUTS.inc()
            log.warning(
                "sync round timed out; applying the pushes that arrived",
                version=rnd.version,
                pushes=rnd.count,
                replicas_to_aggregate=self.settings.replicas,
                no_longer_waiting_for=sorted(missing),
            )
        total, scale = rnd.average()
        self._apply(total, pushes=rnd.count, scale=scale)
        # the new parameters in each type the round's members asked for, built now: the
        # next round may change them before a member wakes up
        replies = {d: self._current(pb.APPLIED, 0, d).reply for d in rnd.reply_dtypes}
        rnd.result = (self.version, replies)
        metrics.ROUND_WAITING.set(0)
        metrics.AGGREGATION_WAIT.observe(rnd.age)
        metrics.ROUND_PUSHES.observe(rnd.count)
        metrics.LIVE_LEARNERS.set(len(self._leases.live()))
        self._cond.notify_all()

    def _apply(
        self,
        grads: Mapping[str, np.ndarray],
        pushes: int,
        scale: float = 1.0,
        lr_scale: float = 1.0,
    ) -> None:
        """One optimizer step with the mean `grads * scale`, at the schedule's learning rate
        times `lr_scale` (staleness-aware async)."""
        assert self._params is not None and self._optimizer is not None
        lr = self.settings.hyper.learning_rate(self.version) * lr_scale
        self._optimizer.apply(self._params, grads, lr, scale)
        self.version += 1
        self.pushes_applied += pushes
        metrics.PUSHES_APPLIED.inc(pushes)
        metrics.VERSION.set(self.version)
        every = self.settings.save_every
        if every and self.version % every == 0 and self._on_checkpoint is not None:
            self._on_checkpoint(self._snapshot())

    def _reply(self, key: tuple, dtype: int, build: Callable[[list], bytes]) -> bytes:
        """The reply `key` for the current version with parameters of type `dtype`, built
        once (its small fields by protobuf, then the parameters from views of their arrays:
        one copy, by tensors.serialize; bfloat16 rounds into a new array first) and handed
        to every caller that gets the same answer."""
        assert self._params is not None
        if self._replies_version != self.version:
            self._replies.clear()
            self._replies_version = self.version
        key = (*key, dtype)
        reply = self._replies.get(key)
        if reply is None:
            if len(self._replies) >= 8:  # e.g. many dropped pushes at one version
                self._replies.pop(next(iter(self._replies)))
            reply = self._replies[key] = build(
                tensors.named_tensors_field(PARAMETERS_FIELD, self._params, dtype)
            )
        return reply

    def pull(self, have_version: int, parameters_dtype: int = FLOAT32) -> bytes:
        """The serialised PullResponse (no parameters if the caller has this version;
        float32, or bfloat16 if `parameters_dtype` asks)."""
        dtype = reply_dtype(parameters_dtype)
        with self._cond:
            if not self.initialized:
                raise NotInitialized(
                    "the shard is not initialized yet: learner 0 must call Initialize first"
                )
            if have_version == self.version:
                return tensors.serialize(
                    pb.PullResponse(
                        version=self.version, unchanged=True, env_frames=self.env_frames
                    )
                )
            return self._reply(
                ("pull", self.env_frames),
                dtype,
                lambda parts: tensors.serialize(
                    pb.PullResponse(version=self.version, env_frames=self.env_frames), parts
                ),
            )

    # -- status, checkpoints, shutdown ----------------------------------------------------------
    def status(self) -> pb.StatusResponse:
        with self._cond:
            live = len(self._leases.live())
            metrics.LIVE_LEARNERS.set(live)
            return pb.StatusResponse(
                shard_index=self.settings.index,
                mode=self._mode,
                initialized=self.initialized,
                version=self.version,
                env_frames=self.env_frames,
                pushes_applied=self.pushes_applied,
                pushes_dropped=self.pushes_dropped,
                pushes_repeated=self.pushes_repeated,
                live_learners=live,
                checkpoint_version=self.checkpoint_version,
                num_variables=len(self._specs),
                num_parameters=sum(a.size for a in (self._params or {}).values()),
            )

    def _snapshot(self) -> Checkpoint:
        assert self._params is not None and self._optimizer is not None
        opt = self._optimizer
        return Checkpoint(
            shard=self.settings.index,
            version=self.version,
            env_frames=self.env_frames,
            parameters={n: a.copy() for n, a in self._params.items()},
            optimizer=opt.name,
            optimizer_step=opt.step,
            slots={s: {n: a.copy() for n, a in arrays.items()} for s, arrays in opt.slots.items()},
            extra={
                "lr_position": self.version,
                "lr": self.settings.hyper.learning_rate(self.version),
                "mode": "sync" if self.settings.sync else "async",
                "pushes_applied": self.pushes_applied,
                "pushes_dropped": self.pushes_dropped,
            },
        )

    def snapshot(self) -> Checkpoint | None:
        """A copy of the state to checkpoint, or None if there is nothing to save."""
        with self._cond:
            return self._snapshot() if self.initialized else None

    def checkpointed(self, version: int) -> None:
        with self._cond:
            self.checkpoint_version = max(self.checkpoint_version, version)
            metrics.CHECKPOINT_VERSION.set(self.checkpoint_version)

    def close(self) -> None:
        """Refuses new pushes and answers every waiting caller: an open sync round is
        applied with the pushes it has."""
        with self._cond:
            self._closing = True
            rnd = self._rounds.current
            if rnd is not None and not rnd.done and rnd.count:
                log.info(
                    "applying the open sync round before shutting down",
                    version=rnd.version,
                    pushes=rnd.count,
                )
                self._close_round(rnd, timed_out=False)
            self._cond.notify_all()
