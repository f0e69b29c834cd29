"""Learner.Act against a real learner process (and a real paramserver shard), spoken to
by a small client of the contract in protos/ba3c/v1/learner.proto."""

from __future__ import annotations

import queue
import threading

import grpc
import numpy as np
import pytest

from ba3c import tensors
from ba3c.v1 import learner_pb2 as pb
from ba3c.v1 import learner_pb2_grpc
from tests.learner.cluster import CARTPOLE, learner_channel, metric, shard_status
from tests.support import Process, ba3c_command, make_run_dir, wait_for

N = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One paramserver shard and one learner on CartPole, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("act")
    run_dir = make_run_dir(tmp / "run", **dict(CARTPOLE, batch_size=16))
    started = [
        Process(ba3c_command(role, "--run-dir", str(run_dir.path)), tmp / f"{role}.out")
        for role in ("paramserver", "learner")
    ]
    channel = learner_channel(run_dir)
    yield run_dir, learner_pb2_grpc.LearnerStub(channel)
    channel.close()
    for p in reversed(started):
        code = p.stop()
        print(f"----- {p.log_path.name} (exit {code}) -----\n{p.output()[-3000:]}")


def spec(**overrides) -> pb.PoolSpec:
    fields = dict(
        env_id="CartPole-v1",
        num_envs=N,
        observation_shape=[4],
        observation_dtype=tensors.DType.Value("FLOAT32"),
        num_actions=2,
    )
    fields.update(overrides)
    return pb.PoolSpec(**fields)


def observations(n=N, dim=4, dtype=np.float32):
    return tensors.encode(np.random.default_rng().standard_normal((n, dim)).astype(dtype))


class Pool:
    """A client of the contract: send a request, read the answer, in lock step."""

    def __init__(self, stub, pool_id="test-pool"):
        self._requests: queue.Queue = queue.Queue()
        self.responses = stub.Act(iter(self._requests.get, None), timeout=60)
        self.pool_id = pool_id

    def step(self, request: pb.ActRequest) -> pb.ActResponse:
        request.pool_id = self.pool_id
        self._requests.put(request)
        return next(self.responses)

    def close(self):
        self._requests.put(None)


def first_request(**spec_overrides) -> pb.ActRequest:
    return pb.ActRequest(spec=spec(**spec_overrides), observations=observations())


def later_request(done_every=0, t=0) -> pb.ActRequest:
    dones = [bool(done_every) and (t + i) % done_every == 0 for i in range(N)]
    return pb.ActRequest(observations=observations(), rewards=[1.0] * N, dones=dones, env_frames=N)


def refused(stub, *requests) -> grpc.RpcError:
    pool = Pool(stub)
    try:
        with pytest.raises(grpc.RpcError) as info:
            for r in requests:
                pool.step(r)
    finally:
        pool.close()
    return info.value


def test_a_pool_gets_one_valid_action_per_environment_and_training_follows(cluster):
    run_dir, stub = cluster
    pool = Pool(stub)
    first = pool.step(first_request())
    assert len(first.actions) == N and all(a in (0, 1) for a in first.actions)
    for t in range(60):
        reply = pool.step(later_request(done_every=7, t=t))
        assert len(reply.actions) == N and all(a in (0, 1) for a in reply.actions)
    # 60 steps x 4 envs = 240 transitions, batch 16: the learner must have pushed
    wait_for(lambda: shard_status(run_dir).version >= 5, 60, "shard version >= 5")
    late = pool.step(later_request())
    assert late.version >= 1
    pool.close()
    assert metric(run_dir, "ba3c_learner_agent_steps_total") >= 62 * N
    wait_for(
        lambda: metric(run_dir, "ba3c_learner_samples_trained_total") >= 5 * 16,
        30,
        "the learner to count 5 batches of 16 samples",
    )


def test_episode_statistics_reach_the_online_score(cluster):
    run_dir, stub = cluster
    pool = Pool(stub)
    pool.step(first_request())
    request = later_request()
    request.dones[1] = True
    request.finished_episodes.add(env_index=1, episode_return=42.0, length=42, frames=42)
    pool.step(request)
    pool.close()
    assert metric(run_dir, "ba3c_learner_online_episodes_total") >= 1
    assert metric(run_dir, "ba3c_learner_online_episode_return_sum") >= 42.0


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(observation_shape=[5]), "spec.observation_shape"),
        (dict(observation_dtype=tensors.DType.Value("UINT8")), "spec.observation_dtype"),
        (dict(num_actions=3), "spec.num_actions"),
        (dict(num_envs=0), "spec.num_envs"),
        (dict(num_envs=2**31 - 1), "spec.num_envs"),
        # newest-frame mode is for image observations only; CartPole's stay whole
        (dict(frame_stack=2), "spec.frame_stack"),
        (dict(frame_stack=-1), "spec.frame_stack"),
    ],
)
def test_a_pool_that_does_not_fit_the_model_is_refused(cluster, overrides, field):
    _, stub = cluster
    error = refused(stub, first_request(**overrides))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()


def test_a_stream_without_spec_is_refused(cluster):
    _, stub = cluster
    error = refused(stub, pb.ActRequest(observations=observations()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec" in error.details()


@pytest.mark.parametrize(
    "bad, field",
    [
        (lambda r: r.observations.CopyFrom(observations(n=N + 1)), "observations"),
        (lambda r: r.observations.CopyFrom(observations(dtype=np.float16)), "observations"),
        (lambda r: r.observations.__setattr__("data", b"\0" * 3), "observations"),
        (
            lambda r: r.observations.CopyFrom(tensors.encode(np.full((N, 4), np.nan, np.float32))),
            "observations",
        ),
        (lambda r: r.rewards.pop(), "rewards"),
        (lambda r: r.finished_episodes.add(env_index=N), "env_index"),
    ],
)
def test_a_malformed_request_ends_the_stream_and_the_learner_serves_on(cluster, bad, field):
    run_dir, stub = cluster
    steps_before = metric(run_dir, "ba3c_learner_agent_steps_total")
    request = later_request()
    bad(request)
    error = refused(stub, first_request(), request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()
    # the bad request counted for nothing, and a new pool is served as usual
    assert metric(run_dir, "ba3c_learner_agent_steps_total") == steps_before + N
    pool = Pool(stub)
    assert len(pool.step(first_request()).actions) == N
    pool.close()


def test_pools_come_and_go_and_many_are_served_at_once(cluster):
    run_dir, stub = cluster
    errors = []

    def run_pool(i):
        try:
            pool = Pool(stub, pool_id=f"pool-{i}")
            pool.step(first_request())
            for t in range(20):
                assert len(pool.step(later_request(t=t)).actions) == N
            pool.close()  # leaves with unfinished segments
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run_pool, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    wait_for(
        lambda: metric(run_dir, "ba3c_learner_pools_connected") == 0,
        30,
        "every pool to be counted as gone",
    )


def test_a_call_without_the_token_is_unauthenticated(cluster):
    run_dir, _ = cluster
    with grpc.insecure_channel(run_dir.read_address("learner", 0)) as channel:
        error = refused(learner_pb2_grpc.LearnerStub(channel), first_request())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
