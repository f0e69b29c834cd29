"""A real Learner server that answers every step with random actions, checking the protocol.

    python -m tests.servers.random_learner RUN_DIR [--index I] [--bad-actions-after K]

Serves Learner.Act through ba3c.rpc.make_server (with the run's token), writes
addresses/learner-I, and checks every request of every stream against learner.proto's
step protocol (spec only first, observation shape and dtype, the newest frame only with
PoolSpec.frame_stack >= 2, N rewards and dones after the
first request, valid episode statistics). A broken request ends that stream with
INVALID_ARGUMENT naming the field, as a real learner does. What it saw is written
atomically, several times a second and at exit, to RUN_DIR/random_learner-I.json:

    {"time": ..., "pools": {pool_id: {"streams", "requests", "agent_steps", "env_frames",
      "dones", "episodes", "returns" (last 200), "lengths" (last 200), "spec",
      "obs_min", "obs_max", "errors" (protocol errors seen)}}}

With --bad-actions-after K it answers the K-th request of each stream with too few
actions, to test how a pool treats a learner that breaks the contract.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time

import grpc
import numpy as np

from ba3c import rpc, tensors
from ba3c.rundir import RunDir, atomic_write
from ba3c.v1 import learner_pb2, learner_pb2_grpc

KEEP = 200


class Invalid(Exception):
    pass


class PoolStats:
    def __init__(self):
        self.streams = self.requests = self.agent_steps = self.env_frames = 0
        self.dones = self.episodes = 0
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.spec: dict | None = None
        self.obs_min: float | None = None
        self.obs_max: float | None = None
        self.errors: list[str] = []

    def to_json(self) -> dict:
        return {k: v for k, v in vars(self).items()}


class RandomLearner(learner_pb2_grpc.LearnerServicer):
    def __init__(self, bad_actions_after: int = 0):
        self.lock = threading.Lock()
        self.pools: dict[str, PoolStats] = {}
        self.bad_actions_after = bad_actions_after
        self.rng = np.random.default_rng()

    def _stats(self, pool_id: str) -> PoolStats:
        return self.pools.setdefault(pool_id, PoolStats())

    def Act(self, request_iterator, context):
        spec = None
        pool_id = ""
        for count, request in enumerate(request_iterator, start=1):
            try:
                if spec is None:
                    spec, pool_id = self._check_first(request)
                    with self.lock:
                        stats = self._stats(pool_id)
                        stats.streams += 1
                        stats.spec = {
                            "env_id": spec.env_id,
                            "num_envs": spec.num_envs,
                            "observation_shape": list(spec.observation_shape),
                            "observation_dtype": tensors.dtype_name(spec.observation_dtype),
                            "num_actions": spec.num_actions,
                        }
                        if spec.frame_stack:
                            stats.spec["frame_stack"] = spec.frame_stack
                else:
                    self._check_next(request, spec, pool_id)
                obs = self._check_observations(request, spec)
            except Invalid as e:
                with self.lock:
                    self._stats(pool_id or request.pool_id).errors.append(str(e))
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            with self.lock:
                self._record(self._stats(pool_id), request, spec, obs)
            n = spec.num_envs
            if self.bad_actions_after and count == self.bad_actions_after:
                n -= 1
            yield learner_pb2.ActResponse(
                actions=self.rng.integers(0, spec.num_actions, n).tolist(),
                version=count,
            )

    @staticmethod
    def _check_first(request):
        if not request.HasField("spec"):
            raise Invalid("spec: required in the first request of a stream")
        spec = request.spec
        if not request.pool_id:
            raise Invalid("pool_id: must not be empty")
        if spec.num_envs < 1 or spec.num_actions < 1 or not spec.env_id:
            raise Invalid(f"spec: num_envs, num_actions and env_id must be set, got {spec}")
        if request.rewards or request.dones or request.finished_episodes:
            raise Invalid("rewards/dones/finished_episodes: must be empty in the first request")
        return spec, request.pool_id

    @staticmethod
    def _check_next(request, spec, pool_id):
        n = spec.num_envs
        if request.pool_id != pool_id:
            raise Invalid(f"pool_id: changed from {pool_id!r} to {request.pool_id!r}")
        if len(request.rewards) != n or len(request.dones) != n:
            raise Invalid(
                f"rewards/dones: need {n} entries, got {len(request.rewards)}/{len(request.dones)}"
            )
        for episode in request.finished_episodes:
            if not 0 <= episode.env_index < n or episode.length < 1 or episode.frames < 1:
                raise Invalid(f"finished_episodes: bad entry {episode}")
            if not request.dones[episode.env_index]:
                raise Invalid(
                    f"finished_episodes: env {episode.env_index} finished but its done is false"
                )

    @staticmethod
    def _check_observations(request, spec):
        try:
            obs = tensors.decode(request.observations)
        except tensors.TensorError as e:
            raise Invalid(f"observations: {e}") from None
        expected = [spec.num_envs, *spec.observation_shape]
        if spec.frame_stack >= 2:  # the newest frame only
            expected[-1] //= spec.frame_stack
        if list(obs.shape) != expected:
            raise Invalid(f"observations: shape {list(obs.shape)}, expected {expected}")
        if request.observations.dtype != spec.observation_dtype:
            raise Invalid("observations: dtype differs from spec.observation_dtype")
        return obs

    @staticmethod
    def _record(stats: PoolStats, request, spec, obs) -> None:
        stats.requests += 1
        if request.rewards:
            stats.agent_steps += spec.num_envs
        stats.env_frames += request.env_frames
        stats.dones += sum(request.dones)
        for episode in request.finished_episodes:
            stats.episodes += 1
            stats.returns = (stats.returns + [episode.episode_return])[-KEEP:]
            stats.lengths = (stats.lengths + [episode.length])[-KEEP:]
        if stats.requests % 50 == 1:  # a sample is enough to see real screens
            low, high = float(obs.min()), float(obs.max())
            stats.obs_min = low if stats.obs_min is None else min(stats.obs_min, low)
            stats.obs_max = high if stats.obs_max is None else max(stats.obs_max, high)

    def snapshot(self) -> dict:
        with self.lock:
            return {"time": time.time(), "pools": {k: v.to_json() for k, v in self.pools.items()}}


def stats_path(run_dir: RunDir, index: int):
    return run_dir.path / f"random_learner-{index}.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--bad-actions-after", type=int, default=0)
    args = parser.parse_args()
    run_dir = RunDir(args.run_dir)
    learner = RandomLearner(args.bad_actions_after)
    server = rpc.make_server(
        run_dir.read_secret(),
        register=lambda s: learner_pb2_grpc.add_LearnerServicer_to_server(learner, s),
    )
    path = stats_path(run_dir, args.index)
    atomic_write(path, json.dumps(learner.snapshot()))
    run_dir.write_address("learner", args.index, server.address)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.25):
        atomic_write(path, json.dumps(learner.snapshot()))
    server.stop(0)
    atomic_write(path, json.dumps(learner.snapshot()))


if __name__ == "__main__":
    main()
