"""`ba3c conformance learner`: the kit acts as simulator pools against a learner
(addresses/learner-I) and checks Learner.Act against learner.proto and docs/contracts.md.

The learner must be serving (it publishes its address only once its shards are ready);
the kit reads the pool's spec (observation shape and dtype, number of actions) for the
run's environment from config.toml, as a pool of that run would. Both observation modes
of the contract are checked: full observations, and (image observations) the newest frame
only with PoolSpec.frame_stack = the run's frame_stack; with vector observations a
frame_stack >= 2 must be refused.
"""

from __future__ import annotations

import queue
import time

import grpc
import numpy as np

from ba3c import envs
from ba3c.tools.conformance import wire
from ba3c.tools.conformance.suite import Failed, Skipped, Suite, expect, expect_code
from ba3c.tools.conformance.target import (
    GARBAGE,
    Target,
    check_health,
    check_health_needs_token,
    wait_address,
)
from ba3c.v1 import learner_pb2 as pb
from ba3c.v1 import tensor_pb2

SERVICE = "ba3c.v1.Learner"
METHOD = f"/{SERVICE}/Act"
N = 4
INVALID = grpc.StatusCode.INVALID_ARGUMENT
WIRE_DTYPE = wire.WIRE_DTYPES


class Stream:
    """One Act call used in lock step, with requests as messages or raw bytes."""

    def __init__(self, channel: grpc.Channel, timeout: float):
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        act = channel.stream_stream(
            METHOD,
            request_serializer=lambda r: r if isinstance(r, bytes) else r.SerializeToString(),
            response_deserializer=pb.ActResponse.FromString,
        )
        self._call = act(iter(self._requests.get, None), timeout=timeout)

    def step(self, request) -> pb.ActResponse:
        self._requests.put(request)
        try:
            return next(self._call)
        except StopIteration:
            raise Failed("the learner ended the stream without a status") from None

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()


class LearnerChecks:
    def __init__(self, target: Target, suite: Suite, steps: int):
        self.t = target
        self.suite = suite
        self.steps = max(10, steps)
        self.rng = np.random.default_rng(16)
        env = envs.describe(target.cfg)
        self.env_id = env.env_id
        self.shape = tuple(int(d) for d in env.observation_shape)
        self.dtype = np.dtype(env.observation_dtype)
        self.num_actions = int(env.num_actions)
        self.frame_stack = int(target.cfg.env.frame_stack) if len(self.shape) == 3 else 0
        self.address = ""

    # -- requests -----------------------------------------------------------------------------
    def spec(self, **overrides) -> pb.PoolSpec:
        fields = dict(
            env_id=self.env_id,
            num_envs=N,
            observation_shape=list(self.shape),
            observation_dtype=WIRE_DTYPE[self.dtype],
            num_actions=self.num_actions,
        )
        fields.update(overrides)
        return pb.PoolSpec(**fields)

    def observations(self, n: int = N, frame_stack: int = 0) -> tensor_pb2.Tensor:
        shape = list(self.shape)
        if frame_stack >= 2:  # the newest frame only
            shape[-1] //= frame_stack
        if self.dtype == np.uint8:
            array = self.rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        else:
            array = self.rng.standard_normal((n, *shape)).astype(self.dtype)
        return wire.tensor(array, WIRE_DTYPE[self.dtype])

    def first(self, **spec_overrides) -> pb.ActRequest:
        spec = self.spec(**spec_overrides)
        observations = self.observations(frame_stack=spec.frame_stack)
        return pb.ActRequest(spec=spec, pool_id="conformance", observations=observations)

    def later(self, t: int, **fields) -> pb.ActRequest:
        dones = [(t + i) % 7 == 0 for i in range(N)]
        finished = [
            pb.EpisodeStats(env_index=i, episode_return=float(t), length=7, frames=7)
            for i in range(N)
            if dones[i]
        ]
        values = dict(
            pool_id="conformance",
            observations=self.observations(),
            rewards=[1.0] * N,
            dones=dones,
            finished_episodes=finished,
            env_frames=N,
        )
        values.update(fields)
        if values["observations"] is None:
            del values["observations"]
        return pb.ActRequest(**values)

    def channel(self, token: str | None = "") -> grpc.Channel:
        return self.t.channel(self.address, token=token)

    def refused(self, requests: list, code=INVALID, contains: str = "", token: str | None = ""):
        """The last of `requests` ends the stream with `code`; the ones before are answered."""
        with self.channel(token) as channel:
            stream = Stream(channel, 60)
            try:
                for request in requests[:-1]:
                    self.expect_actions(stream.step(request))
                expect_code(lambda: stream.step(requests[-1]), code, contains)
            finally:
                stream.close()

    def expect_actions(self, response: pb.ActResponse) -> None:
        actions = list(response.actions)
        expect(len(actions) == N, f"{len(actions)} actions for {N} environments")
        expect(
            all(0 <= a < self.num_actions for a in actions),
            f"actions {actions} not in [0, {self.num_actions})",
        )
        expect(response.version >= 0, f"version {response.version}")

    # -- the checks -------------------------------------------------------------------------------
    def run(self) -> None:
        c = self.suite.check
        self.address = c("address", wait_address, self.t, "learner")
        if not self.address:
            return
        c("token.missing", self.refused, [self.first()], grpc.StatusCode.UNAUTHENTICATED, "", None)
        c("token.wrong", self.refused, [self.first()], grpc.StatusCode.UNAUTHENTICATED, "", "bad")
        c("health.token", check_health_needs_token, self.t, self.address)
        c("health.serving", check_health, self.t, self.address, SERVICE)
        first = self.first()
        no_spec = pb.ActRequest(pool_id="conformance", observations=self.observations())
        bad_first = {
            "no_spec": (no_spec, "spec"),
            "num_envs_zero": (self.first(num_envs=0), "num_envs"),
            "observation_shape": (self.first(observation_shape=[*self.shape, 1]), "shape"),
            "observation_dtype": (self.first(observation_dtype=tensor_pb2.INT32), "dtype"),
            "num_actions": (self.first(num_actions=self.num_actions + 1), "num_actions"),
            "no_observations": (
                pb.ActRequest(spec=self.spec(), pool_id="conformance"),
                "observations",
            ),
            "observations_count": (
                pb.ActRequest(spec=self.spec(), pool_id="c", observations=self.observations(N + 1)),
                "observations",
            ),
            "garbage": (GARBAGE, ""),
            "frame_stack_negative": (self.first(frame_stack=-1), "frame_stack"),
        }
        if self.frame_stack >= 2:
            k, channels = self.frame_stack, self.shape[-1]
            bad_first["frame_stack_channels"] = (
                pb.ActRequest(
                    spec=self.spec(frame_stack=channels + 1),
                    pool_id="conformance",
                    observations=self.observations(),
                ),
                "frame_stack",
            )
            full = pb.ActRequest(
                spec=self.spec(frame_stack=k),
                pool_id="conformance",
                observations=self.observations(),
            )
            bad_first["newest_frame_full_observations"] = (full, "observations")
        else:
            vector = pb.ActRequest(
                spec=self.spec(frame_stack=2),
                pool_id="conformance",
                observations=self.observations(),
            )
            bad_first["frame_stack_vector"] = (vector, "frame_stack")
        for name, (request, contains) in bad_first.items():
            c(f"act.first.{name}", self.refused, [request], INVALID, contains)
        bad_later = {
            "no_observations": (self.later(1, observations=None), "observations"),
            "rewards_count": (self.later(1, rewards=[1.0] * (N - 1)), "rewards"),
            "dones_count": (self.later(1, dones=[False] * (N + 1)), "dones"),
            "rewards_nan": (self.later(1, rewards=[float("nan")] * N), "rewards"),
            "env_index": (
                self.later(
                    1,
                    dones=[True] * N,
                    finished_episodes=[pb.EpisodeStats(env_index=N, length=1, frames=1)],
                ),
                "env_index",
            ),
            "negative_env_frames": (self.later(1, env_frames=-1), "env_frames"),
            "garbage": (GARBAGE, ""),
        }
        if self.dtype.kind == "f":
            nan = np.full((N, *self.shape), np.nan, np.float32)
            bad_later["observations_nan"] = (
                self.later(1, observations=wire.tensor(nan)),
                "NaN",
            )
        for name, (request, contains) in bad_later.items():
            c(f"act.later.{name}", self.refused, [first, request], INVALID, contains)
        c("act.steps", self.act_steps)
        c("act.two_pools", self.two_pools)
        c("act.newest_frame.steps", self.newest_frame_steps)
        if self.frame_stack >= 2:
            newest = self.first(frame_stack=self.frame_stack)
            full = self.later(1)  # full observations where the newest frame belongs
            c("act.newest_frame.later_full", self.refused, [newest, full], INVALID, "observations")

    def newest_frame_steps(self) -> None:
        """A pool that sends the newest frame only (PoolSpec.frame_stack) is answered at
        every step, through episodes that end."""
        k = self.frame_stack
        if k < 2:
            raise Skipped("vector observations: no frames to stack")
        with self.channel() as channel:
            stream = Stream(channel, 60)
            try:
                self.expect_actions(stream.step(self.first(frame_stack=k)))
                for t in range(1, 12):
                    frames = self.observations(frame_stack=k)
                    self.expect_actions(stream.step(self.later(t, observations=frames)))
            finally:
                stream.close()

    def act_steps(self) -> None:
        """`steps` lock-step exchanges; the version the actions were computed with never
        goes back and advances while the learner trains on what the pool sends."""
        with self.channel() as channel:
            stream = Stream(channel, self.t.timeout + 60)
            try:
                response = stream.step(self.first())
                self.expect_actions(response)
                versions = [response.version]
                deadline = time.monotonic() + self.t.timeout
                t = 1
                while t < self.steps or (
                    versions[-1] == versions[0] and time.monotonic() < deadline
                ):
                    response = stream.step(self.later(t))
                    self.expect_actions(response)
                    expect(
                        response.version >= versions[-1],
                        f"version went back from {versions[-1]} to {response.version}",
                    )
                    versions.append(response.version)
                    t += 1
            finally:
                stream.close()
        expect(
            versions[-1] > versions[0],
            f"version stayed {versions[0]} over {t} steps and {self.t.timeout:.0f}s: the "
            "learner did not train on what the pool sent",
        )

    def two_pools(self) -> None:
        with self.channel() as channel:
            streams = [Stream(channel, 60), Stream(channel, 60)]
            try:
                for s in streams:
                    self.expect_actions(s.step(self.first()))
                for t in range(1, 6):
                    for s in streams:
                        self.expect_actions(s.step(self.later(t)))
            finally:
                for s in streams:
                    s.close()


def run(target: Target, suite: Suite, steps: int = 300) -> None:
    LearnerChecks(target, suite, steps).run()
