"""Helpers for the learner's tests against real processes: start roles, read /metrics."""

from __future__ import annotations

import json
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from ba3c import rpc
from ba3c.rundir import RunDir
from ba3c.v1 import paramserver_pb2 as ps_pb
from ba3c.v1 import paramserver_pb2_grpc as ps_grpc
from tests.support import wait_for

# CartPole settings that learn reliably (measured: mean return of 20 episodes >= 195
# after 30-60 s on 2 cores).
CARTPOLE = dict(
    env="CartPole-v1",
    model="mlp",
    lr=1e-3,
    beta1=0.9,
    beta2=0.999,
    entropy_beta=0.01,
    batch_size=64,
    simulator_procs=16,
)


def metrics(run_dir: RunDir, role: str = "learner", index: int = 0) -> dict[str, float]:
    """Every sample of a process's /metrics as {name{labels}: value}."""
    entry = json.loads(run_dir.target_path(role, index).read_text())
    address = entry[0]["targets"][0]
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def metric(run_dir: RunDir, name: str, role: str = "learner", index: int = 0) -> float:
    return metrics(run_dir, role, index).get(name, 0.0)


def shard_status(run_dir: RunDir, index: int = 0) -> ps_pb.StatusResponse:
    address = run_dir.read_address("paramserver", index)
    with rpc.make_channel(address, run_dir.read_secret()) as channel:
        return ps_grpc.ParameterServerStub(channel).Status(ps_pb.StatusRequest(), timeout=10)


def learner_channel(run_dir: RunDir, index: int = 0, timeout: float = 120) -> grpc.Channel:
    address = wait_for(
        lambda: run_dir.read_address("learner", index), timeout, f"addresses/learner-{index}"
    )
    return rpc.make_channel(address, run_dir.read_secret())
