"""Helpers for the learner's tests against real processes: start roles, read /metrics."""

from __future__ import annotations

import grpc

from ba3c import rpc
from ba3c.rundir import RunDir
from ba3c.v1 import paramserver_pb2 as ps_pb
from ba3c.v1 import paramserver_pb2_grpc as ps_grpc
from tests.support import wait_for
from tests.support.metrics import scrape

# CartPole settings that learn reliably (measured: mean return of 20 episodes >= 195
# after 30-60 s on 2 cores).
CARTPOLE = dict(
    env="CartPole-v1",
    model="mlp",
    optimizer="adam",
    lr=1e-3,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    grad_clip=40.0,
    entropy_beta=0.01,
    batch_size=64,
    simulator_procs=16,
)


def metric(
    run_dir: RunDir, name: str, role: str = "learner", index: int = 0, **labels: str
) -> float:
    """The value of `name` (summed over the samples carrying `labels`) on ROLE-INDEX."""
    return scrape(run_dir, role, index).value(name, **labels)


def shard_status(run_dir: RunDir, index: int = 0) -> ps_pb.StatusResponse:
    address = run_dir.read_address("paramserver", index)
    with rpc.make_channel(address, run_dir.read_secret()) as channel:
        return ps_grpc.ParameterServerStub(channel).Status(ps_pb.StatusRequest(), timeout=10)


def learner_channel(run_dir: RunDir, index: int = 0, timeout: float = 120) -> grpc.Channel:
    address = wait_for(
        lambda: run_dir.read_address("learner", index), timeout, f"addresses/learner-{index}"
    )
    return rpc.make_channel(address, run_dir.read_secret())
