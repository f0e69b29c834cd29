"""TLS with a per-run CA (`--tls`): a real handshake with a real shard, and every client that
does not trust the run's CA refused."""

from __future__ import annotations

import os
import stat
import subprocess

import grpc
import pytest
from cryptography import x509

from ba3c import rpc
from ba3c.rundir import RunDir
from ba3c.tls import RunTLS
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc
from tests.paramserver.support import launch, start_shard
from tests.support import ROOT, ba3c_command, make_run_dir


def status(channel: grpc.Channel) -> pb.StatusResponse:
    return pb_grpc.ParameterServerStub(channel).Status(
        pb.StatusRequest(), timeout=5, wait_for_ready=False
    )


@pytest.fixture(scope="module")
def tls_shard(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    run_dir = make_run_dir(tmp / "run", tls=True)
    start = launch(tmp)
    _, address = start_shard(start, run_dir)
    yield run_dir, address
    start.stop_all()


def test_a_client_that_trusts_the_run_ca_completes_a_real_handshake(tls_shard):
    run_dir, address = tls_shard
    with rpc.make_channel(address, run_dir.read_secret(), tls=RunTLS(run_dir)) as channel:
        assert status(channel).shard_index == 0
    # the host name in the certificate works as well as the address
    port = address.rsplit(":", 1)[1]
    with rpc.make_channel(
        f"localhost:{port}", run_dir.read_secret(), tls=RunTLS(run_dir)
    ) as channel:
        assert status(channel).shard_index == 0


def test_the_run_ca_is_private_and_its_certificate_is_a_ca(tls_shard):
    run_dir, _ = tls_shard
    tls = RunTLS(run_dir)
    assert stat.S_IMODE(os.stat(tls.bundle_path).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(tls.cert_path.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_client_with_another_runs_ca_is_refused(tls_shard, run_dir_factory):
    run_dir, address = tls_shard
    other = run_dir_factory(tls=True)
    with rpc.make_channel(address, run_dir.read_secret(), tls=RunTLS(other)) as channel:
        with pytest.raises(grpc.RpcError) as info:
            status(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_client_is_refused(tls_shard):
    run_dir, address = tls_shard
    with rpc.make_channel(address, run_dir.read_secret()) as channel:
        with pytest.raises(grpc.RpcError) as info:
            status(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_does_not_replace_the_token(tls_shard):
    run_dir, address = tls_shard
    with rpc.make_channel(address, "not-the-token", tls=RunTLS(run_dir)) as channel:
        with pytest.raises(grpc.RpcError) as info:
            status(channel)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_world_readable_ca_key_stops_the_service_with_one_line(run_dir_factory, processes):
    run_dir = run_dir_factory(tls=True)
    tls = RunTLS(run_dir)
    tls.ensure_ca()
    os.chmod(tls.bundle_path, 0o644)
    proc = processes("paramserver", "paramserver", "--run-dir", str(run_dir.path))
    assert proc.popen.wait(60) == 2
    out = proc.output()
    assert "ca.pem is readable by others" in out and "chmod 600" in out
    assert "Traceback" not in out
    assert run_dir.read_address("paramserver", 0) is None


@pytest.mark.slow
def test_a_whole_run_trains_over_tls(tmp_path):
    """`ba3c train --tls`: shards, learner, pool, evaluator and the launcher all speak TLS."""
    run_dir = tmp_path / "run"
    done = subprocess.run(
        ba3c_command(
            "train",
            "--run-dir",
            str(run_dir),
            "--tls",
            "--plain",
            "-e",
            "CartPole-v1",
            "--model",
            "mlp",
            "--batch_size",
            "32",
            "--simulator_procs",
            "8",
            "--eval_every",
            "1",
            "--eval_episodes",
            "1",
            "--eval_max_steps",
            "100",
            "--save_every",
            "5",
            "--steps",
            "20",
            "--minutes",
            "4",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    print(done.stdout[-2000:], done.stderr[-2000:])
    assert done.returncode == 0
    assert "reached --steps 20" in done.stdout
    assert RunDir(run_dir).evaluations(), "the evaluator never evaluated"
    assert stat.S_IMODE(os.stat(run_dir / "tls" / "ca.pem").st_mode) == 0o600
