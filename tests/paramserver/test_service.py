"""One real `ba3c paramserver` process in async mode: initializing, pushing, pulling, and
every kind of bad input refused without a change of state."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ba3c import rpc, tensors
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import tensor_pb2
from tests.paramserver.support import (
    SHAPES,
    Client,
    gradients,
    initial_values,
    launch,
    metric,
    refused,
    start_shard,
)
from tests.support import make_run_dir


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """An async shard with a 1 MiB message limit, initialized by learner-0."""
    tmp = tmp_path_factory.mktemp("async")
    run_dir = make_run_dir(tmp / "run", max_message_mb=1, optimizer="sgd", lr=0.5)
    start = launch(tmp)
    proc, _ = start_shard(start, run_dir)
    client = Client(run_dir)
    yield run_dir, client, proc
    client.close()
    start.stop_all()


def state(client: Client) -> tuple[pb.StatusResponse, dict[str, np.ndarray]]:
    return client.status(), client.pull()[1]


def test_pull_and_push_before_initialization_are_failed_precondition(shard):
    run_dir, client, _ = shard
    if client.status().initialized:
        pytest.skip("module shard already initialized by an earlier test")
    assert refused(client.pull).code() == grpc.StatusCode.FAILED_PRECONDITION
    error = refused(lambda: client.push(0, gradients(0)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Initialize" in error.details()


def test_initialize_refuses_bad_values_and_then_the_first_writer_wins(shard):
    run_dir, client, _ = shard
    good = initial_values()
    nan = dict(good, **{"fc/bias": np.full(8, np.nan, np.float32)})
    bad_requests = {
        "at least one variable": [],
        "appears twice": [*tensors.encode_named(good), *tensors.encode_named(good)][:5],
        "must be float32": tensors.encode_named({"fc/bias": np.zeros(8, np.int32)}),
        "NaN or Inf": tensors.encode_named(nan),
        "needs 32 bytes": [
            tensor_pb2.NamedTensor(
                name="fc/bias",
                tensor=tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=[8], data=b"\0" * 5),
            )
        ],
    }
    for expected, parameters in bad_requests.items():
        error = refused(
            lambda p=parameters: client.stub.Initialize(
                pb.InitializeRequest(client_id="learner-0", parameters=p), timeout=30
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, expected
        assert expected in error.details()
    assert not client.status().initialized

    first = client.initialize(good)
    assert first.applied and "4 variables" in first.message
    second = Client(run_dir, client_id="learner-1").initialize(initial_values(seed=7))
    assert not second.applied
    assert "already initialized" in second.message and "learner-0" in second.message
    reply, params = client.pull()
    assert reply.version == 0
    for name in SHAPES:
        np.testing.assert_array_equal(params[name], good[name])


def test_register_describes_the_shard(shard):
    _, client, _ = shard
    reply = client.register()
    assert reply.mode == pb.ASYNC and reply.initialized
    assert {v.name: tuple(v.shape) for v in reply.variables} == SHAPES
    assert all(v.dtype == tensor_pb2.FLOAT32 for v in reply.variables)
    assert reply.lease_seconds == 30
    error = refused(lambda: client.stub.Register(pb.RegisterRequest(client_id=""), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "client_id" in error.details()


def _bad_pushes():
    g = gradients(0)
    wrong_shape = dict(g, **{"fc/kernel": np.zeros((8, 16), np.float32)})
    with_nan = dict(g, **{"conv/bias": np.array([0, np.nan, 0, 0], np.float32)})
    with_inf = dict(g, **{"fc/bias": np.array([0, 0, np.inf, 0, 0, 0, 0, 0], np.float32)})
    missing = {n: a for n, a in g.items() if n != "conv/bias"}
    unknown = dict(g, **{"head/kernel": np.zeros(3, np.float32)})

    def req(grads, version=0, dtype=None, client_id="learner-0"):
        return pb.PushPullRequest(
            client_id=client_id, version=version, gradients=tensors.encode_named(grads, dtype)
        )

    int_grads = req(g)
    int_grads.gradients[0].tensor.CopyFrom(
        tensors.encode(np.zeros(SHAPES["conv/kernel"], np.int32))
    )
    return {
        "unknown variable 'head/kernel'": req(unknown),
        "missing gradients for 'conv/bias'": req(missing),
        "'fc/kernel': gradient shape [8, 16] does not match": req(wrong_shape),
        "'conv/kernel': gradient dtype int32 is not allowed": int_grads,
        "'conv/bias': gradient contains NaN or Inf": req(with_nan),
        "'fc/bias': gradient contains NaN or Inf": req(with_inf),
        "version 1000 is ahead of the shard's version": req(g, version=1000),
        "client_id is empty": req(g, client_id=""),
    }


@pytest.mark.parametrize("expected", list(_bad_pushes()))
def test_a_bad_push_is_invalid_argument_and_changes_nothing(shard, expected):
    _, client, proc = shard
    if not client.status().initialized:
        client.initialize(initial_values())
    before, params_before = state(client)
    error = refused(lambda: client.stub.PushPull(_bad_pushes()[expected], timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()
    after, params_after = state(client)
    assert (after.version, after.env_frames, after.pushes_applied, after.pushes_dropped) == (
        before.version,
        before.env_frames,
        before.pushes_applied,
        before.pushes_dropped,
    )
    for name in SHAPES:
        np.testing.assert_array_equal(params_after[name], params_before[name])
    assert proc.alive()


def test_an_oversized_message_is_resource_exhausted(shard):
    run_dir, client, proc = shard
    if not client.status().initialized:
        client.initialize(initial_values())
    before = client.status()
    big = Client(run_dir, max_message_bytes=8 << 20)
    huge = dict(gradients(0), **{"fc/kernel": np.zeros((400, 1000), np.float32)})  # 1.6 MB
    error = refused(lambda: big.push(before.version, huge))
    big.close()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.status().version == before.version and proc.alive()


def test_pushes_apply_at_once_and_gradients_may_be_narrower(shard):
    run_dir, client, _ = shard
    if not client.status().initialized:
        client.initialize(initial_values())
    reply, params = client.pull()
    for dtype in ("float32", "bfloat16", "float16"):
        g = gradients(1)
        sent = tensors.decode(tensors.encode(g["fc/kernel"], dtype)).astype(np.float32)
        pushed, new = client.push(reply.version, g, dtype=dtype, env_frames=100)
        assert pushed.outcome == pb.APPLIED and pushed.version == reply.version + 1
        assert pushed.staleness == 0
        assert all(new[n].dtype == np.float32 for n in SHAPES)
        np.testing.assert_allclose(
            new["fc/kernel"], params["fc/kernel"] - 0.5 * sent, rtol=1e-6, atol=1e-6
        )
        reply, params = pushed, new
    assert client.status().env_frames >= 300


def test_pull_says_unchanged_when_the_caller_is_up_to_date(shard):
    _, client, _ = shard
    if not client.status().initialized:
        client.initialize(initial_values())
    reply, params = client.pull()
    same, empty = client.pull(have_version=reply.version)
    assert same.unchanged and not empty and same.version == reply.version
    older, again = client.pull(have_version=reply.version - 1)
    assert not older.unchanged and set(again) == set(SHAPES)


def rounded_to_bfloat16(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: tensors.from_bfloat16_bits(tensors.to_bfloat16_bits(a)) for n, a in params.items()}


def test_parameters_come_as_bfloat16_when_asked_and_the_shard_keeps_float32(shard):
    _, client, _ = shard
    if not client.status().initialized:
        client.initialize(initial_values())
    bf16 = tensor_pb2.BFLOAT16
    exact_reply, exact = client.pull()
    reply, rounded = client.pull(parameters_dtype=bf16)
    assert reply.version == exact_reply.version
    assert {t.tensor.dtype for t in reply.parameters} == {bf16}
    assert sum(len(t.tensor.data) for t in reply.parameters) * 2 == sum(
        len(t.tensor.data) for t in exact_reply.parameters
    )
    for name, value in rounded_to_bfloat16(exact).items():
        np.testing.assert_array_equal(rounded[name], value)
        assert not np.array_equal(rounded[name], exact[name]), "rounding should show"
    # a push asking for bfloat16: the update goes to the float32 values, the reply is rounded
    g = gradients(5)
    pushed, new_rounded = client.push(reply.version, g, parameters_dtype=bf16)
    assert {t.tensor.dtype for t in pushed.parameters} == {bf16}
    after_reply, after = client.pull()
    assert after_reply.version == pushed.version == reply.version + 1
    for name in SHAPES:
        np.testing.assert_allclose(after[name], exact[name] - 0.5 * g[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(new_rounded[name], rounded_to_bfloat16(after)[name])
    # a type the shard does not send: INVALID_ARGUMENT, nothing applied
    for call in (
        lambda: client.pull(parameters_dtype=tensor_pb2.INT32),
        lambda: client.push(after_reply.version, g, parameters_dtype=tensor_pb2.FLOAT16),
    ):
        error = refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameters_dtype must be FLOAT32 or BFLOAT16" in error.details()
    assert client.status().version == after_reply.version


def test_a_stale_push_is_applied_and_its_staleness_recorded(shard):
    run_dir, client, _ = shard
    if not client.status().initialized:
        client.initialize(initial_values())
    version = client.pull()[0].version
    client.push(version, gradients(2))
    client.push(version + 1, gradients(3))
    stale, _ = client.push(version, gradients(4))
    assert stale.outcome == pb.APPLIED and stale.staleness == 2
    assert stale.version == version + 3
    assert metric(run_dir, "ba3c_paramserver_staleness_versions_count") >= 3


def test_health_and_metrics_are_served(shard):
    run_dir, client, _ = shard
    assert rpc.health_check(client.channel)
    assert rpc.health_check(client.channel, "ba3c.v1.ParameterServer")
    assert metric(run_dir, "ba3c_paramserver_rejected_total") >= 1
    for name in (
        "ba3c_paramserver_version",
        "ba3c_paramserver_pushpull_seconds_count",
        "ba3c_paramserver_received_bytes_total",
        "ba3c_paramserver_live_learners",
    ):
        metric(run_dir, name)


def test_async_staleness_bound_drops_old_pushes(run_dir_factory, processes):
    run_dir = run_dir_factory(max_staleness=1, optimizer="sgd")
    start_shard(processes, run_dir)
    client = Client(run_dir)
    client.initialize(initial_values())
    client.push(0, gradients(0))
    client.push(1, gradients(1))
    ok, _ = client.push(1, gradients(2))  # staleness 1: within the bound
    assert ok.outcome == pb.APPLIED and ok.version == 3
    _, before = client.pull()
    dropped, params = client.push(0, gradients(3))  # staleness 3
    assert dropped.outcome == pb.DROPPED_STALE and dropped.staleness == 3
    assert dropped.version == 3
    for name in SHAPES:
        np.testing.assert_array_equal(params[name], before[name])
    status = client.status()
    assert (status.pushes_applied, status.pushes_dropped) == (3, 1)
    assert metric(run_dir, "ba3c_paramserver_pushes_dropped_total") == 1


def test_a_malformed_push_is_invalid_argument(shard):
    _, client, proc = shard
    raw = client.channel.unary_unary("/ba3c.v1.ParameterServer/PushPull")
    error = refused(lambda: raw(b"\x1a\x10abc", timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed PushPullRequest" in error.details()
    assert proc.alive()


def test_a_bad_flag_is_one_line_and_exit_2(run_dir_factory, processes):
    run_dir = run_dir_factory()
    proc = processes(
        "bad-flag", "paramserver", "--run-dir", str(run_dir.path), "--replicas_to_aggregate", "0"
    )
    assert proc.popen.wait(60) == 2
    out = proc.output().strip()
    assert "replicas_to_aggregate must be at least 1" in out
    assert "Traceback" not in out and len(out.splitlines()) == 1
    assert run_dir.read_address("paramserver", 0) is None
