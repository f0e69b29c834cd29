"""Playing the learner's part for the evaluator's tests: real paramserver shards,
initialized with parameters whose score we know, plus readers for what the evaluator wrote.

The known parameters make the mlp model a CartPole controller (push towards the side the
pole falls to: 3*angle + angular velocity), sampled with a moderate temperature, so the
evaluator scores far above what random initial weights score (about 20) and still varies
from episode to episode.
"""

from __future__ import annotations

import json

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from ba3c import envs, models, rpc, tensors
from ba3c.v1 import paramserver_pb2 as ps
from ba3c.v1 import paramserver_pb2_grpc as ps_grpc
from tests.support import wait_for

CARTPOLE = dict(env="CartPole-v1", model="mlp", optimizer="sgd", lr=0.1)


def build_model(cfg):
    spec = envs.describe(cfg)
    return models.build_model(cfg, spec.observation_shape, spec.num_actions, spec.observation_dtype)


def controller_weights(cfg) -> dict[str, np.ndarray]:
    """mlp weights of a good but not perfect CartPole policy (see the module docstring)."""
    weights = {k: np.zeros_like(v) for k, v in models.get_weights(build_model(cfg)).items()}
    weights["hidden1/kernel"][:, 0] = [0, 0, 30, 10]
    weights["hidden2/kernel"][0, 0] = 3.0
    weights["policy/kernel"][0] = [-1.0, 1.0]
    return weights


def start_shards(processes, run_dir, count: int) -> list:
    """`count` paramserver processes, returned once each has published its address."""
    started = [
        processes(
            f"paramserver-{k}", "paramserver", "--run-dir", str(run_dir.path), "--index", str(k)
        )
        for k in range(count)
    ]
    for k in range(count):
        wait_for(
            lambda k=k: run_dir.read_address("paramserver", k), 60, f"paramserver-{k}'s address"
        )
    return started


def stub(run_dir, k: int) -> ps_grpc.ParameterServerStub:
    address = wait_for(lambda: run_dir.read_address("paramserver", k), 60, "a shard address")
    return ps_grpc.ParameterServerStub(rpc.make_channel(address, run_dir.read_secret()))


def initialize(run_dir, cfg, weights) -> None:
    """Splits `weights` with the shared assignment and initializes every shard with them."""
    assignment = models.assignment(cfg, build_model(cfg))
    for k, pieces in enumerate(assignment.split(weights)):
        reply = stub(run_dir, k).Initialize(
            ps.InitializeRequest(client_id="test-learner", parameters=tensors.encode_named(pieces)),
            timeout=30,
        )
        assert reply.applied, reply.message


def push_zero_gradients(run_dir, cfg, env_frames: int) -> list[int]:
    """One PushPull of zero gradients to every shard (as a learner); returns new versions."""
    model = build_model(cfg)
    assignment = models.assignment(cfg, model)
    zeros = {k: np.zeros_like(v) for k, v in models.get_weights(model).items()}
    versions = []
    for k, pieces in enumerate(assignment.split(zeros)):
        shard = stub(run_dir, k)
        shard.Register(ps.RegisterRequest(client_id="test-learner", role=ps.LEARNER), timeout=30)
        reply = shard.PushPull(
            ps.PushPullRequest(
                client_id="test-learner",
                version=0,
                gradients=tensors.encode_named(pieces),
                env_frames=env_frames,
                samples=1,
            ),
            timeout=30,
        )
        versions.append(reply.version)
    return versions


def status(run_dir, k: int) -> ps.StatusResponse:
    return stub(run_dir, k).Status(ps.StatusRequest(), timeout=30)


def evaluations(run_dir) -> list[dict]:
    return run_dir.evaluations()


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard's own event reader loads them."""
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
    }


def log_events(run_dir, role: str = "evaluator", index: int = 0) -> list[dict]:
    try:
        lines = run_dir.log_path(role, index).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def logged(run_dir, event: str, role: str = "evaluator") -> list[dict]:
    return [e for e in log_events(run_dir, role) if e.get("event") == event]


def quiet_env() -> dict[str, str]:
    """The environment for a child that imports TensorFlow, without its C++ chatter."""
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
