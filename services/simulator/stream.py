"""One Act stream between a pool and a learner: the step protocol of learner.proto.

    request t:   [spec, t = 0 only] observations o_t, rewards r_{t-1}, dones d_{t-1},
                 episodes that ended with a_{t-1}, emulator frames since request t-1
    response t:  actions a_t for every environment

`run` keeps the two in lockstep until the stream breaks (grpc.RpcError, or
ProtocolError when the learner's reply breaks the contract) or `stop` is set. Every
stream starts with fresh episodes, so a learner never sees half a trajectory.
"""

from __future__ import annotations

import functools
import queue
import threading
import time

import grpc
import numpy as np
import structlog

from ba3c import tensors
from ba3c.envs import EnvPool, EnvSpec, Step
from ba3c.tensors import DType
from ba3c.v1 import learner_pb2
from services.simulator import metrics

log = structlog.get_logger()

_WIRE_DTYPES = {np.dtype(np.uint8): DType.UINT8, np.dtype(np.float32): DType.FLOAT32}
PROGRESS_EVERY = 30.0  # seconds between progress lines in the log


class ProtocolError(Exception):
    """The learner's reply breaks the Act contract (the message says how)."""


def pool_spec(spec: EnvSpec, num_envs: int, frame_stack: int = 0) -> learner_pb2.PoolSpec:
    """The PoolSpec of a pool; frame_stack >= 2 when it sends the newest frame only."""
    return learner_pb2.PoolSpec(
        env_id=spec.env_id,
        num_envs=num_envs,
        observation_shape=spec.observation_shape,
        observation_dtype=_WIRE_DTYPES[spec.observation_dtype],
        num_actions=spec.num_actions,
        frame_stack=frame_stack,
    )


OBSERVATIONS_FIELD = 3  # ActRequest.observations


def wire_request(request: learner_pb2.ActRequest, observations: np.ndarray) -> bytes:
    """`request` with `observations` as its observations Tensor, serialised: the same bytes
    protobuf would make, with the frames copied once (tensors.serialize) instead of into
    the message and out again."""
    return tensors.serialize(
        request,
        tensors.tensor_field(
            OBSERVATIONS_FIELD, observations, _WIRE_DTYPES[np.dtype(observations.dtype)]
        ),
    )


def first_request(pool_id: str, spec: learner_pb2.PoolSpec, observations: np.ndarray) -> bytes:
    return wire_request(learner_pb2.ActRequest(spec=spec, pool_id=pool_id), observations)


def next_request(pool_id: str, step: Step) -> bytes:
    request = learner_pb2.ActRequest(
        pool_id=pool_id,
        rewards=step.rewards.tolist(),
        dones=step.dones.tolist(),
        finished_episodes=[
            learner_pb2.EpisodeStats(
                env_index=f.env_index,
                episode_return=f.episode_return,
                length=f.length,
                frames=f.frames,
            )
            for f in step.finished
        ],
        env_frames=step.frames,
    )
    return wire_request(request, step.observations)


def actions_from(response: learner_pb2.ActResponse, num_envs: int, num_actions: int) -> np.ndarray:
    """The response's actions, checked against the contract."""
    actions = np.fromiter(response.actions, np.int32, len(response.actions))
    if actions.shape != (num_envs,):
        raise ProtocolError(f"ActResponse.actions has {actions.size} entries, expected {num_envs}")
    if num_envs and (actions.min() < 0 or actions.max() >= num_actions):
        raise ProtocolError(
            f"ActResponse.actions must be in [0, {num_actions}), got "
            f"{int(actions.min())}..{int(actions.max())}"
        )
    return actions


class ActStream:
    """One bidirectional Act call, used in lockstep: `exchange` sends one serialised
    ActRequest and waits for its response. Setting `stop` cancels the call, also while it
    waits."""

    METHOD = "/ba3c.v1.Learner/Act"

    def __init__(self, channel: grpc.Channel, stop: threading.Event):
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        act = channel.stream_stream(  # requests arrive serialised (see wire_request)
            self.METHOD,
            request_serializer=None,
            response_deserializer=learner_pb2.ActResponse.FromString,
        )
        self._call = act(iter(self._requests.get, None))
        self._closed = threading.Event()
        self.responses = 0
        threading.Thread(target=self._cancel_on, args=(stop,), name="act-stop", daemon=True).start()

    def _cancel_on(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            if self._closed.is_set():
                return
        self._call.cancel()

    def send(self, request: bytes) -> None:
        self._requests.put(request)

    def receive(self) -> learner_pb2.ActResponse:
        try:
            response = next(self._call)
        except StopIteration:
            raise ProtocolError("the learner ended the stream without an error") from None
        self.responses += 1
        return response

    def exchange(self, request: bytes) -> learner_pb2.ActResponse:
        self.send(request)
        return self.receive()

    def close(self) -> None:
        self._closed.set()
        self._requests.put(None)  # ends the request iterator, freeing gRPC's sender thread
        self._call.cancel()

    def __enter__(self) -> ActStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run(pool: EnvPool, act: ActStream, pool_id: str, stop: threading.Event) -> int:
    """Steps `pool` for the learner behind `act` until `stop` is set; returns the pool
    steps taken. Raises grpc.RpcError or ProtocolError when the stream breaks (not when
    `stop` cancelled it)."""
    spec = pool.spec
    request = first_request(pool_id, pool_spec(spec, pool.num_envs, pool.frame_stack), pool.reset())
    progress = _Progress(pool_id, pool.num_envs)
    account = None  # the previous step's bookkeeping, done while the learner works
    steps = 0
    while not stop.is_set():
        sent = time.perf_counter()
        act.send(request)
        if account is not None:
            account()
            account = None
        try:
            response = act.receive()
        except grpc.RpcError:
            if stop.is_set():  # the stop cancelled the call: a clean end
                break
            raise
        received = time.perf_counter()
        if not steps:
            metrics.CONNECTED.set(1)
            log.info("streaming", pool_id=pool_id, num_envs=pool.num_envs)
        step = pool.step(actions_from(response, pool.num_envs, spec.num_actions))
        stepped = time.perf_counter()
        request = next_request(pool_id, step)
        account = functools.partial(
            _account,
            progress,
            step,
            received - sent,
            stepped - received,
            pool.num_envs,
            response.version,
        )
        steps += 1
    if account is not None:
        account()
    return steps


def _account(
    progress: _Progress, step: Step, wait: float, stepping: float, num_envs: int, version: int
) -> None:
    metrics.record_step(wait, stepping, step.frames, num_envs, step.finished, version)
    progress.add(step, wait, stepping)


class _Progress:
    """A log line every PROGRESS_EVERY seconds: throughput, where time went, scores."""

    def __init__(self, pool_id: str, num_envs: int):
        self._pool_id = pool_id
        self._num_envs = num_envs
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self._since = now
        self._steps = 0
        self._wait = self._step = 0.0
        self._returns: list[float] = []

    def add(self, step: Step, wait: float, stepping: float) -> None:
        self._steps += 1
        self._wait += wait
        self._step += stepping
        self._returns.extend(f.episode_return for f in step.finished)
        now = time.monotonic()
        if now - self._since >= PROGRESS_EVERY:
            elapsed = now - self._since
            log.info(
                "pool progress",
                pool_id=self._pool_id,
                agent_steps_per_s=round(self._steps * self._num_envs / elapsed, 1),
                wait_fraction=round(self._wait / elapsed, 3),
                step_fraction=round(self._step / elapsed, 3),
                episodes=len(self._returns),
                mean_return=round(float(np.mean(self._returns)), 2) if self._returns else None,
            )
            self._reset(now)
