"""Property test: malformed requests to a real `ba3c paramserver` process.

Random shapes, dtypes, sizes, NaN/Inf, unknown/missing/duplicate names, huge declared
shapes with tiny payloads, versions from the future, truncated and random bytes, and
messages over the size limit. Every one must end with a gRPC error that says what is
wrong, the server must stay healthy, and the shard's parameters and counters must be
bit-for-bit what they were.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ba3c import rpc, tensors
from ba3c.v1 import paramserver_pb2 as pb
from tests.paramserver.support import Client, gradients, initial_values, launch, start_shard
from tests.security.malformed import TRIED, broken_named, truncations
from tests.support import make_run_dir

# shrinking a failure against a live server takes minutes; the failing input is printed as is
NO_SHRINK = (Phase.explicit, Phase.generate)
EXAMPLES = 250
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
GRAD_DTYPES = (
    tensors.dtype_from_name("float32"),
    tensors.dtype_from_name("bfloat16"),
    tensors.dtype_from_name("float16"),
)


class Shard:
    """The shard under test, with its state as it was before any bad input."""

    def __init__(self, run_dir, proc):
        self.run_dir, self.proc = run_dir, proc
        self.client = Client(run_dir, client_id="learner-0", max_message_bytes=8 << 20)
        self.client.register()
        self.client.initialize(initial_values())
        self.client.push(0, gradients(0))  # version 1, with optimizer state
        self.before = self.fingerprint()
        channel = self.client.channel
        self.raw = {
            m: channel.unary_unary(f"/ba3c.v1.ParameterServer/{m}")
            for m in ("PushPull", "Initialize", "Pull", "Register")
        }

    def fingerprint(self) -> tuple:
        status = self.client.status()
        _, params = self.client.pull()
        return (
            (
                status.version,
                status.env_frames,
                status.pushes_applied,
                status.pushes_dropped,
                status.initialized,
            ),
            {n: a.tobytes() for n, a in params.items()},
        )

    def assert_unchanged(self) -> None:
        assert rpc.health_check(self.client.channel), "the shard stopped serving"
        assert self.proc.alive()
        counters, params = self.fingerprint()
        assert counters == self.before[0]
        assert params == self.before[1], "parameters changed"


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input-ps")
    run_dir = make_run_dir(tmp / "run", max_message_mb=1, optimizer="adam")
    start = launch(tmp)
    proc, _ = start_shard(start, run_dir)
    yield Shard(run_dir, proc)
    start.stop_all()


def refused(call) -> grpc.RpcError:
    try:
        reply = call()
    except grpc.RpcError as e:
        assert e.code() in REFUSALS, f"{e.code()}: {e.details()}"
        assert e.details(), "an error without a message"
        return e
    raise AssertionError(f"accepted: {reply}")


@SETTINGS
@given(data=st.data())
def test_a_malformed_push_is_refused_and_changes_nothing(shard, data):
    broken = data.draw(broken_named(gradients(1), allow_dtypes=GRAD_DTYPES))
    TRIED["paramserver PushPull"] += 1
    version = shard.before[0][0]
    request = pb.PushPullRequest(
        client_id="learner-0", version=version, env_frames=100, samples=32, gradients=broken.tensors
    )
    error = refused(lambda: shard.client.stub.PushPull(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, broken.kind
    if broken.name:
        assert broken.name in error.details(), (broken.kind, error.details())
    shard.assert_unchanged()


@SETTINGS
@given(ahead=st.integers(1, 2**62), client_id=st.sampled_from(["learner-0", "learner-9"]))
def test_a_push_from_the_future_is_refused_and_changes_nothing(shard, ahead, client_id):
    TRIED["paramserver PushPull"] += 1
    request = pb.PushPullRequest(
        client_id=client_id,
        version=shard.before[0][0] + ahead,
        gradients=tensors.encode_named(gradients(2)),
    )
    error = refused(lambda: shard.client.stub.PushPull(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "version" in error.details()
    shard.assert_unchanged()


@SETTINGS
@given(data=st.data())
def test_malformed_initial_values_change_nothing(shard, data):
    broken = data.draw(broken_named(initial_values(5)))
    TRIED["paramserver Initialize"] += 1
    request = pb.InitializeRequest(client_id="learner-1", parameters=broken.tensors)
    try:
        reply = shard.client.stub.Initialize(request, timeout=30)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details()
    else:
        assert not reply.applied  # already initialized: first writer won
    shard.assert_unchanged()


@SETTINGS
@given(data=st.data())
def test_truncated_or_random_bytes_are_refused(shard, data):
    method = data.draw(st.sampled_from(["PushPull", "Initialize", "Pull", "Register"]))
    good = {
        "PushPull": pb.PushPullRequest(
            client_id="learner-0", version=1, gradients=tensors.encode_named(gradients(3))
        ),
        "Initialize": pb.InitializeRequest(
            client_id="learner-1", parameters=tensors.encode_named(initial_values(6))
        ),
        "Pull": pb.PullRequest(client_id="evaluator-0", have_version=-1),
        "Register": pb.RegisterRequest(client_id="learner-7", role=pb.LEARNER),
    }[method].SerializeToString()
    body = data.draw(st.one_of(truncations(good), st.binary(min_size=1, max_size=256)))
    TRIED[f"paramserver {method} bytes"] += 1
    try:
        reply = shard.raw[method](body, timeout=30)
    except grpc.RpcError as e:
        # undecodable bytes are INVALID_ARGUMENT too (never gRPC's INTERNAL)
        assert e.code() in REFUSALS, (e.code(), e.details())
        assert e.details()
    else:
        # a prefix may decode as a valid Pull/Register (e.g. without its last fields): a
        # read or a registration, which must not change the parameters either
        assert method in ("Pull", "Register", "Initialize"), (method, reply)
    shard.assert_unchanged()


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(megabytes=st.floats(1.01, 4.0))
def test_a_message_over_the_limit_is_resource_exhausted(shard, megabytes):
    TRIED["paramserver oversized"] += 1
    size = int(megabytes * (1 << 20)) // 4
    request = pb.PushPullRequest(
        client_id="learner-0",
        version=1,
        gradients=[
            *tensors.encode_named(gradients(4)),
            *tensors.encode_named({"padding": np.zeros(size, np.float32)}),
        ],
    )
    error = refused(lambda: shard.client.stub.PushPull(request, timeout=30))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    shard.assert_unchanged()
