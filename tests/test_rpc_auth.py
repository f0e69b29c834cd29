"""The token interceptor on a real gRPC server in another process."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ba3c import rpc
from tests.support import wait_for


@pytest.fixture
def server(run_dir_factory, processes):
    import sys

    run_dir = run_dir_factory()
    processes(
        "health-server",
        sys.executable,
        "-m",
        "tests.servers.health_only",
        str(run_dir.path),
        raw=True,
    )
    address = wait_for(lambda: run_dir.read_address("health", 0), 30, "the server's address")
    return run_dir, address


def check(channel):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


def test_the_right_token_is_let_in(server):
    run_dir, address = server
    with rpc.make_channel(address, run_dir.read_secret()) as channel:
        assert check(channel).status == health_pb2.HealthCheckResponse.SERVING


def test_no_token_is_unauthenticated(server):
    _, address = server
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            check(channel)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in info.value.details()


def test_a_wrong_token_is_unauthenticated(server):
    run_dir, address = server
    wrong = run_dir.read_secret()[:-1] + "x"
    with rpc.make_channel(address, wrong) as channel:
        with pytest.raises(grpc.RpcError) as info:
            check(channel)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert not rpc.health_check(channel)


def test_a_streaming_call_without_token_is_refused_too(server):
    _, address = server
    with grpc.insecure_channel(address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        with pytest.raises(grpc.RpcError) as info:
            next(stream)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
