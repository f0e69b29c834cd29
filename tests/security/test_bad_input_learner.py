"""Property test: malformed Act streams to a real `ba3c learner` process (CartPole).

Bad specs (missing, wrong shape/dtype/actions, zero or absurd numbers of environments),
bad observations (shapes, dtypes, byte counts, huge declared shapes, NaN/Inf), bad later
steps (reward and done counts, NaN/Inf rewards, episode indices, negative frames),
truncated and random bytes, and streams that stop mid-way. Every malformed stream must
end with INVALID_ARGUMENT (or a gRPC decoding error) naming the field, the learner must
stay healthy and serve a well-formed pool afterwards, and the shard it trains must be
bit-for-bit unchanged: no junk reached training.
"""

from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ba3c import rpc, tensors
from ba3c.v1 import learner_pb2 as pb
from ba3c.v1 import learner_pb2_grpc, tensor_pb2
from tests.faults.cluster import Cluster
from tests.security.malformed import TRIED, bad_floats, huge_dims, negative_dims, shapes
from tests.support import wait_for

N = 4
# shrinking a failure against a live server takes minutes; the failing input is printed as is
NO_SHRINK = (Phase.explicit, Phase.generate)
EXAMPLES = 150
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FLOAT32 = tensor_pb2.FLOAT32


class Learner:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        address = wait_for(
            lambda: cluster.run_dir.read_address("learner", 0), 180, "the learner's address"
        )
        self.channel = rpc.make_channel(address, cluster.run_dir.read_secret(), retry_services=())
        rpc.wait_until_serving(self.channel, 180)
        self.stub = learner_pb2_grpc.LearnerStub(self.channel)
        self.raw = self.channel.stream_stream("/ba3c.v1.Learner/Act")
        self.shard_before = self.shard_state()

    def shard_state(self):
        status = self.cluster.status()
        return status.version, status.pushes_applied, status.env_frames

    def assert_healthy(self) -> None:
        assert rpc.health_check(self.channel), "the learner stopped serving"
        assert self.cluster.alive("learner-0")


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    # a batch the few steps of these streams can never fill: no training on junk
    cluster = Cluster(
        tmp_path_factory.mktemp("bad-input-learner"), batch_size=4096, max_message_mb=4
    )
    cluster.start_all(shards=1, learners=1, pools=0, evaluator=False)
    try:
        cluster.wait_progress(None, 180, "the shard to be initialized")
        yield Learner(cluster)
    finally:
        cluster.stop_all()


def spec(**overrides) -> pb.PoolSpec:
    fields = dict(
        env_id="CartPole-v1",
        num_envs=N,
        observation_shape=[4],
        observation_dtype=FLOAT32,
        num_actions=2,
    )
    fields.update(overrides)
    return pb.PoolSpec(**fields)


def observations(n: int = N) -> tensor_pb2.Tensor:
    return tensors.encode(np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32))


def later(n: int = N) -> pb.ActRequest:
    return pb.ActRequest(
        pool_id="fuzz",
        observations=observations(n),
        rewards=[1.0] * n,
        dones=[False] * n,
        env_frames=n,
    )


@st.composite
def bad_spec(draw) -> tuple[pb.ActRequest, str]:
    kind = draw(st.sampled_from(["none", "num_envs", "shape", "dtype", "actions"]))
    first = pb.ActRequest(pool_id="fuzz", observations=observations())
    if kind == "none":
        return first, "spec"
    if kind == "num_envs":
        n = draw(st.one_of(st.integers(-(2**31), 0), st.integers(2**20, 2**31 - 1)))
        first.spec.CopyFrom(spec(num_envs=n))
    elif kind == "shape":
        first.spec.CopyFrom(spec(observation_shape=draw(shapes.filter(lambda s: s != (4,)))))
    elif kind == "dtype":
        first.spec.CopyFrom(
            spec(
                observation_dtype=draw(
                    st.sampled_from([0, tensor_pb2.UINT8, tensor_pb2.FLOAT16, tensor_pb2.INT64, 99])
                )
            )
        )
    else:
        first.spec.CopyFrom(spec(num_actions=draw(st.integers(-5, 10**6).filter(lambda a: a != 2))))
    return first, "spec"


@st.composite
def bad_observations(draw) -> tuple[tensor_pb2.Tensor, str]:
    kind = draw(
        st.sampled_from(
            ["shape", "dtype", "short", "long", "huge", "negative", "nonfinite", "unset"]
        )
    )
    good = observations()
    if kind == "shape":
        new = draw(shapes.filter(lambda s: s != (N, 4)))
        return tensor_pb2.Tensor(
            dtype=FLOAT32, shape=new, data=b"\0" * (4 * int(np.prod(new, dtype=np.int64)))
        ), kind
    if kind == "dtype":
        dtype = draw(st.sampled_from([0, tensor_pb2.UINT8, tensor_pb2.INT32, 99]))
        return tensor_pb2.Tensor(dtype=dtype, shape=[N, 4], data=b"\1" * 64), kind
    if kind == "short":
        cut = draw(st.integers(0, len(good.data) - 1))
        return tensor_pb2.Tensor(dtype=FLOAT32, shape=[N, 4], data=good.data[:cut]), kind
    if kind == "long":
        return tensor_pb2.Tensor(
            dtype=FLOAT32, shape=[N, 4], data=good.data + draw(st.binary(min_size=1, max_size=32))
        ), kind
    if kind == "huge":
        return tensor_pb2.Tensor(dtype=FLOAT32, shape=draw(huge_dims), data=b"\0" * 16), kind
    if kind == "negative":
        return tensor_pb2.Tensor(dtype=FLOAT32, shape=draw(negative_dims)), kind
    if kind == "nonfinite":
        array = tensors.decode(good).copy().reshape(-1)
        at = draw(st.lists(st.integers(0, array.size - 1), min_size=1, max_size=3))
        array[at] = draw(bad_floats)
        return tensors.encode(array.reshape(N, 4)), kind
    return tensor_pb2.Tensor(), kind


@st.composite
def bad_later_step(draw) -> tuple[pb.ActRequest, str]:
    kind = draw(
        st.sampled_from(
            [
                "observations",
                "rewards count",
                "dones count",
                "nonfinite reward",
                "episode index",
                "env_frames",
            ]
        )
    )
    step = later()
    if kind == "observations":
        tensor, _ = draw(bad_observations())
        step.observations.CopyFrom(tensor)
        return step, "observations"
    if kind == "rewards count":
        del step.rewards[:]
        step.rewards.extend([0.0] * draw(st.integers(0, 50).filter(lambda k: k != N)))
        return step, "rewards"
    if kind == "dones count":
        del step.dones[:]
        step.dones.extend([False] * draw(st.integers(0, 50).filter(lambda k: k != N)))
        return step, "dones"
    if kind == "nonfinite reward":
        step.rewards[draw(st.integers(0, N - 1))] = draw(bad_floats)
        return step, "rewards"
    if kind == "episode index":
        index = draw(st.one_of(st.integers(-(2**31), -1), st.integers(N, 2**31 - 1)))
        step.finished_episodes.add(env_index=index, episode_return=1.0, length=1, frames=4)
        return step, "env_index"
    step.env_frames = draw(st.integers(-(2**63), -1))
    return step, "env_frames"


def run_stream(learner: Learner, requests: list[pb.ActRequest]) -> grpc.RpcError:
    """Sends `requests` on one stream; the last must end it with an error."""
    replies = learner.stub.Act(iter(requests), timeout=30)
    got = 0
    try:
        for _ in replies:
            got += 1
    except grpc.RpcError as e:
        assert got == len(requests) - 1, f"{got} answers before the error"
        return e
    raise AssertionError(f"all {len(requests)} requests were answered")


@SETTINGS
@given(data=st.data())
def test_a_malformed_stream_is_refused_and_nothing_is_trained(learner, data):
    where = data.draw(st.sampled_from(["spec", "first observations", "later step"]))
    if where == "spec":
        first, field = data.draw(bad_spec())
        requests = [first]
    elif where == "first observations":
        tensor, _ = data.draw(bad_observations())
        requests = [pb.ActRequest(pool_id="fuzz", spec=spec(), observations=tensor)]
        field = "observations"
    else:
        good_steps = data.draw(st.integers(0, 3))
        bad, field = data.draw(bad_later_step())
        requests = [
            pb.ActRequest(pool_id="fuzz", spec=spec(), observations=observations()),
            *[later() for _ in range(good_steps)],
            bad,
        ]
    TRIED["learner Act"] += 1
    error = run_stream(learner, requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert field in error.details(), error.details()
    learner.assert_healthy()


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_truncated_or_random_bytes_end_the_stream(learner, data):
    good = pb.ActRequest(pool_id="fuzz", spec=spec(), observations=observations())
    encoded = good.SerializeToString()
    body = data.draw(
        st.one_of(
            st.integers(1, len(encoded) - 1).map(lambda k: encoded[:k]),
            st.binary(min_size=1, max_size=200),
        )
    )
    TRIED["learner Act bytes"] += 1
    replies = learner.raw(iter([body]), timeout=30)
    try:
        answers = list(replies)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        assert e.details()
    else:
        # a prefix can decode into a well-formed first request (e.g. without pool_id)
        assert len(answers) <= 1
    learner.assert_healthy()


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.integers(0, 4))
def test_a_stream_that_stops_mid_way_is_let_go(learner, steps):
    TRIED["learner Act stopped mid-way"] += 1
    requests: queue.Queue = queue.Queue()
    replies = learner.stub.Act(iter(requests.get, None), timeout=30)
    requests.put(pb.ActRequest(pool_id="fuzz", spec=spec(), observations=observations()))
    next(replies)
    for _ in range(steps):
        requests.put(later())
        next(replies)
    replies.cancel()  # the pool vanishes without closing its side
    learner.assert_healthy()


def test_after_malformed_streams_the_learner_serves_a_good_pool_and_trained_nothing(learner):
    # Its own malformed streams, so that the test means the same alone or after the fuzzing
    # above: good steps then a NaN reward (the one most likely to reach training), then a
    # pool that vanishes mid-way.
    nan_reward = later()
    nan_reward.rewards[0] = float("nan")
    first = pb.ActRequest(pool_id="fuzz", spec=spec(), observations=observations())
    error = run_stream(learner, [first, later(), later(), nan_reward])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "rewards" in error.details()
    requests: queue.Queue = queue.Queue()
    replies = learner.stub.Act(iter(requests.get, None), timeout=30)
    requests.put(first)
    next(replies)
    replies.cancel()
    wait_for(
        lambda: learner.cluster.metrics("learner-0").value("ba3c_learner_pools_connected") == 0,
        30,
        "every fuzzed stream to be let go",
    )
    replies = learner.stub.Act(
        iter(
            [
                pb.ActRequest(pool_id="good", spec=spec(), observations=observations()),
                *[later() for _ in range(3)],
            ]
        ),
        timeout=30,
    )
    answers = list(replies)
    assert len(answers) == 4 and all(len(a.actions) == N for a in answers)
    assert all(0 <= x < 2 for a in answers for x in a.actions)
    assert learner.shard_state() == learner.shard_before
    learner.assert_healthy()


@pytest.mark.parametrize("num_envs", [2**31 - 1, 50_000_000])
def test_an_absurd_number_of_environments_is_refused_before_any_memory_is_taken(learner, num_envs):
    TRIED["learner Act"] += 1
    rss = learner.cluster.rss_mb("learner-0")
    first = pb.ActRequest(pool_id="fuzz", spec=spec(num_envs=num_envs), observations=observations())
    error = run_stream(learner, [first])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert "num_envs" in error.details()
    assert learner.cluster.rss_mb("learner-0") < rss + 100
    learner.assert_healthy()
