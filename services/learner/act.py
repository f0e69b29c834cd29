"""`Learner.Act`: the bidirectional stream each simulator pool holds with the learner.

Per request: validate it (a bad one ends the stream with INVALID_ARGUMENT and changes
nothing), stack the newest frames into full observations if the pool sends only those
(PoolSpec.frame_stack >= 2, services/learner/stacker.py), ask the predictor for logits and
values of the new observations (batched with the other pools), sample the actions and
answer; then, while the pool steps its environments, attach the rewards and dones to the
pool's memory, remember the new step, and queue the transitions of every segment that
closed.

A full transition queue blocks the stream, which slows its pool down instead of growing
memory. A pool that disconnects loses its unfinished segments and nothing else.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import structlog

from ba3c import tensors
from ba3c.models import sample_actions
from ba3c.v1 import learner_pb2 as pb
from ba3c.v1 import learner_pb2_grpc
from services.learner import metrics
from services.learner.memory import PoolMemory, Transition
from services.learner.predictor import Predictor, PredictorStopped
from services.learner.progress import Progress
from services.learner.stacker import FrameStacker

log = structlog.get_logger()

MAX_ENVS = 1 << 16  # environments per pool; bounds the memory one stream can claim


class BadRequest(ValueError):
    """A request that breaks the contract; the message names the field and the problem."""


class Malformed:
    """Stands in for an ActRequest whose bytes did not parse, so that the stream ends with
    INVALID_ARGUMENT (gRPC's own answer to a raising deserializer is INTERNAL)."""

    def __init__(self, error: Exception):
        self.message = f"malformed ActRequest: {error or type(error).__name__}"
        self.pool_id = ""


def parse_request(data: bytes) -> pb.ActRequest | Malformed:
    try:
        return pb.ActRequest.FromString(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is the pool's bad bytes
        return Malformed(e)


def add_to_server(servicer: learner_pb2_grpc.LearnerServicer, server: grpc.Server) -> None:
    """Registers Learner.Act with a request parser that never raises (see Malformed)."""
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Act,
        request_deserializer=parse_request,
        response_serializer=pb.ActResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("ba3c.v1.Learner", {"Act": handler}),)
    )


class ModelSpec:
    """What a pool must match: observation shape and dtype, number of actions."""

    def __init__(
        self, observation_shape: tuple[int, ...], observation_dtype: str, num_actions: int
    ):
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.observation_dtype = np.dtype(observation_dtype).name
        self.num_actions = int(num_actions)

    def check_pool(self, spec: pb.PoolSpec) -> None:
        shape = tuple(int(d) for d in spec.observation_shape)
        dtype = tensors.dtype_name(spec.observation_dtype)
        if not 1 <= spec.num_envs <= MAX_ENVS:
            raise BadRequest(f"spec.num_envs must be in [1, {MAX_ENVS}], got {spec.num_envs}")
        if shape != self.observation_shape:
            raise BadRequest(
                f"spec.observation_shape {list(shape)} does not match the "
                f"learner's model, which takes {list(self.observation_shape)}"
            )
        if dtype != self.observation_dtype:
            raise BadRequest(
                f"spec.observation_dtype {dtype} does not match the learner's "
                f"model, which takes {self.observation_dtype}"
            )
        if spec.num_actions != self.num_actions:
            raise BadRequest(
                f"spec.num_actions {spec.num_actions} does not match the "
                f"learner's model, which has {self.num_actions} actions"
            )
        check_frame_stack(spec)


def check_frame_stack(spec: pb.PoolSpec) -> None:
    """PoolSpec.frame_stack: 0 or 1 (full observations), or k >= 2 dividing the channels
    of an image observation (newest frame only)."""
    k, shape = spec.frame_stack, list(spec.observation_shape)
    if k < 0:
        raise BadRequest(f"spec.frame_stack must be >= 0, got {k}")
    if k >= 2 and (len(shape) != 3 or shape[-1] % k):
        raise BadRequest(
            f"spec.frame_stack {k} needs an image observation [H, W, C] with C divisible "
            f"by {k}; observation_shape is {shape}"
        )


def wire_shape(spec: pb.PoolSpec) -> tuple[int, ...]:
    """The shape of one request's observations: [N, *observation_shape], or with
    frame_stack = k >= 2 the newest frame [N, H, W, C / k]."""
    shape = [spec.num_envs, *(int(d) for d in spec.observation_shape)]
    if spec.frame_stack >= 2:
        shape[-1] //= spec.frame_stack
    return tuple(shape)


def parse_step(
    request: pb.ActRequest, spec: pb.PoolSpec, first: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observations, rewards, dones) of a request, checked against the pool's spec."""
    if isinstance(request, Malformed):
        raise BadRequest(request.message)
    n = spec.num_envs
    if not request.HasField("observations"):
        raise BadRequest("observations is missing (every request carries o_t for all N envs)")
    try:
        obs = tensors.decode(request.observations)
    except tensors.TensorError as e:
        raise BadRequest(f"observations: {e}") from None
    want = wire_shape(spec)
    if obs.shape != want or request.observations.dtype != spec.observation_dtype:
        raise BadRequest(
            f"observations must be {tensors.dtype_name(spec.observation_dtype)} {list(want)}, "
            f"got {tensors.dtype_name(request.observations.dtype)} {list(obs.shape)}"
        )
    if obs.dtype.kind == "f" and not np.all(np.isfinite(obs)):
        raise BadRequest("observations contain NaN or Inf")
    if first:
        return obs, np.zeros(0, np.float32), np.zeros(0, bool)
    if len(request.rewards) != n or len(request.dones) != n:
        raise BadRequest(
            f"rewards and dones need {n} entries each after the first request, "
            f"got {len(request.rewards)} and {len(request.dones)}"
        )
    rewards = np.asarray(request.rewards, np.float32)
    if not np.all(np.isfinite(rewards)):
        raise BadRequest("rewards contain NaN or Inf")
    for ep in request.finished_episodes:
        if not 0 <= ep.env_index < n:
            raise BadRequest(f"finished_episodes.env_index {ep.env_index} is not in [0, {n})")
    if request.env_frames < 0:
        raise BadRequest(f"env_frames must be >= 0, got {request.env_frames}")
    return obs, rewards, np.asarray(request.dones, bool)


class ActServicer(learner_pb2_grpc.LearnerServicer):
    def __init__(
        self,
        model_spec: ModelSpec,
        predictor: Predictor,
        transitions: queue.Queue[Transition],
        progress: Progress,
        version: Callable[[], int],
        t_max: int,
        gamma: float,
        seed: int,
        stop: threading.Event,
    ):
        self.model_spec = model_spec
        self.predictor = predictor
        self.transitions = transitions
        self.progress = progress
        self.version = version
        self.t_max = t_max
        self.gamma = gamma
        self.seed = seed
        self.stop = stop
        self._stream_ids = itertools.count()

    def Act(self, request_iterator: Iterator[pb.ActRequest], context: grpc.ServicerContext):
        first = next(request_iterator, None)
        if first is None:
            return
        try:
            if isinstance(first, Malformed):
                raise BadRequest(first.message)
            if not first.HasField("spec"):
                raise BadRequest("the first request of a stream must carry spec")
            self.model_spec.check_pool(first.spec)
            parse_step(first, first.spec, first=True)
        except BadRequest as e:
            log.warning("pool refused", pool=first.pool_id, error=str(e))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        spec = first.spec
        pool = first.pool_id or context.peer()
        rng = np.random.default_rng([self.seed, next(self._stream_ids)])
        memory = PoolMemory(spec.num_envs, self.t_max, self.gamma)
        stacker = None
        if spec.frame_stack >= 2:
            shape = tuple(int(d) for d in spec.observation_shape)
            stacker = FrameStacker(spec.num_envs, shape, spec.frame_stack)
        self.progress.pool_joined(pool)
        log.info(
            "pool connected",
            pool=pool,
            env_id=spec.env_id,
            num_envs=spec.num_envs,
            frame_stack=spec.frame_stack,
        )
        reason = "disconnected"
        try:
            for t, request in enumerate(itertools.chain([first], request_iterator)):
                try:
                    obs, rewards, dones = parse_step(request, spec, first=t == 0)
                except BadRequest as e:
                    reason = f"bad request: {e}"
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                if stacker is not None:
                    reset = [ep.env_index for ep in request.finished_episodes]
                    obs = stacker.first(obs) if t == 0 else stacker.next(obs, reset)
                try:
                    logits, values = self.predictor.predict(obs)
                except PredictorStopped:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "learner is stopping")
                actions = sample_actions(logits, greedy=False, rng=rng)
                version, acted_at = self.version(), time.monotonic()
                self.progress.add_frames(request.env_frames, spec.num_envs)
                self.progress.add_episodes([ep.episode_return for ep in request.finished_episodes])
                yield pb.ActResponse(actions=actions.tolist(), version=version)
                # The memory work happens after answering, while the pool steps.
                if t > 0:
                    self._queue(memory.record_outcomes(rewards, dones), context)
                self._queue(memory.add_steps(obs, actions, values, version, acted_at), context)
        finally:
            self.progress.pool_left(pool)
            log.info("pool left", pool=pool, reason=reason, steps_lost=memory.open_steps())

    def _queue(self, items: list[Transition], context: grpc.ServicerContext) -> None:
        """Blocks while the queue is full (back-pressure on the pool)."""
        for item in items:
            while True:
                try:
                    self.transitions.put(item, timeout=0.5)
                    break
                except queue.Full:
                    if self.stop.is_set() or not context.is_active():
                        return
        metrics.QUEUE_DEPTH.set(self.transitions.qsize())
