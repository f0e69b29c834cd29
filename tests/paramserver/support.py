"""Helpers for the parameter-server tests: start a shard, talk to it, read its metrics."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import grpc
import numpy as np

from ba3c import rpc, tensors
from ba3c.rundir import RunDir
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc
from tests.support import Process, ba3c_command, wait_for
from tests.support.metrics import scrape

# A small model: a few variables of different ranks.
SHAPES = {"conv/kernel": (3, 3, 2, 4), "conv/bias": (4,), "fc/kernel": (16, 8), "fc/bias": (8,)}


def initial_values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(0.5, 1.5, s).astype(np.float32) for n, s in SHAPES.items()}


def gradients(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    return {n: (scale * rng.standard_normal(s)).astype(np.float32) for n, s in SHAPES.items()}


def start_shard(
    start, run_dir: RunDir, *flags: str, index: int = 0, name: str = "paramserver"
) -> tuple[Process, str]:
    """Starts `ba3c paramserver` via `start` (the `processes` fixture or `launch`) and
    waits until its address is published."""
    run_dir.remove_address("paramserver", index)
    proc = start(name, "paramserver", "--run-dir", str(run_dir.path), "--index", str(index), *flags)
    address = wait_for(
        lambda: run_dir.read_address("paramserver", index) or (not proc.alive() and _died(proc)),
        60,
        "the shard's address",
    )
    return proc, address


def _died(proc: Process):
    raise AssertionError(f"the shard exited early:\n{proc.output()[-3000:]}")


def launch(tmp_path):
    """A `processes`-like starter for module-scoped fixtures; call .stop_all() at the end."""
    started: list[Process] = []

    def start(name: str, *args: str, raw: bool = False):
        cmd = list(args) if raw else ba3c_command(*args)
        p = Process(cmd, tmp_path / "proc-logs" / f"{name}.out")
        started.append(p)
        return p

    def stop_all():
        for p in started:
            code = p.stop()
            print(f"----- {p.log_path.name} (exit {code}) -----\n{p.output()[-3000:]}")

    start.stop_all = stop_all
    return start


class Client:
    """A learner or evaluator of one shard, with numpy in and out."""

    def __init__(
        self,
        run_dir: RunDir,
        index: int = 0,
        client_id: str = "learner-0",
        max_message_bytes: int = 256 << 20,
    ):
        address = run_dir.read_address("paramserver", index)
        assert address, f"no address for paramserver-{index}"
        self.channel = rpc.make_channel(address, run_dir.read_secret(), max_message_bytes)
        self.stub = pb_grpc.ParameterServerStub(self.channel)
        self.client_id = client_id

    def close(self) -> None:
        self.channel.close()

    def register(self, role: int = pb.LEARNER) -> pb.RegisterResponse:
        return self.stub.Register(
            pb.RegisterRequest(client_id=self.client_id, role=role), timeout=30
        )

    def initialize(self, values: Mapping[str, np.ndarray]) -> pb.InitializeResponse:
        return self.stub.Initialize(
            pb.InitializeRequest(client_id=self.client_id, parameters=tensors.encode_named(values)),
            timeout=30,
        )

    def push(
        self,
        version: int,
        grads: Mapping[str, np.ndarray],
        dtype: str = "float32",
        env_frames: int = 0,
        timeout: float = 60,
        parameters_dtype: int = 0,
    ) -> tuple[pb.PushPullResponse, dict]:
        """(the reply, its parameters as float32 arrays whatever their wire type)."""
        reply = self.stub.PushPull(
            pb.PushPullRequest(
                client_id=self.client_id,
                version=version,
                env_frames=env_frames,
                gradients=tensors.encode_named(grads, dtype),
                parameters_dtype=parameters_dtype,
            ),
            timeout=timeout,
        )
        return reply, tensors.decode_named(reply.parameters)

    def pull(
        self, have_version: int = -1, parameters_dtype: int = 0
    ) -> tuple[pb.PullResponse, dict]:
        reply = self.stub.Pull(
            pb.PullRequest(
                client_id=self.client_id,
                have_version=have_version,
                parameters_dtype=parameters_dtype,
            ),
            timeout=30,
        )
        return reply, tensors.decode_named(reply.parameters)

    def status(self) -> pb.StatusResponse:
        return self.stub.Status(pb.StatusRequest(), timeout=30)


def refused(call) -> grpc.RpcError:
    """Runs `call`, which must fail with an RpcError; returns the error."""
    try:
        call()
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call was accepted")


def metric(run_dir: RunDir, name: str, index: int = 0) -> float:
    """Sum of every sample of `name` on paramserver-INDEX's /metrics endpoint."""
    metrics = scrape(run_dir, "paramserver", index)
    assert metrics.has(name), f"metric {name} not exported"
    return metrics.value(name)


def client_command(run_dir: RunDir, client_id: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.paramserver.client_process",
        "--run-dir",
        str(run_dir.path),
        "--client-id",
        client_id,
        *flags,
    ]
