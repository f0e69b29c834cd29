"""A small training run of real processes that the fault tests can kill, freeze and restart.

`Cluster` starts paramserver shards, learners, simulator pools and an evaluator (CartPole
with the mlp model, so a step is cheap and the learners start fast), each as its own
`ba3c ROLE` process in its own process group. Faults are injected by PID into exactly the
processes a test started (SIGKILL, SIGSTOP/SIGCONT), never by name, because other
people's tests run on the same machine.

Progress is read the way an operator would: each shard's Status (version, env frames) and
each process's /metrics.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from ba3c import rpc
from ba3c.rundir import RunDir
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import paramserver_pb2_grpc as pb_grpc
from tests.support import Process, ba3c_command, make_run_dir, wait_for
from tests.support.metrics import Metrics, scrape

# Cheap to train, quick to start; checkpoints often so a restart has one to resume from.
SETTINGS = dict(
    env="CartPole-v1",
    model="mlp",
    optimizer="adam",
    lr=1e-3,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    grad_clip=40.0,
    batch_size=32,
    simulator_procs=8,
    save_every=10,
    keep_checkpoints=3,
    eval_every=2.0,
    eval_episodes=2,
    eval_max_steps=200,
    rpc_timeout=4.0,
    sync_timeout=3.0,
    lease_seconds=8.0,
)
STARTUP_SECONDS = 180  # a learner imports TensorFlow (about 5 s idle, far more under load)


@dataclass(frozen=True)
class Progress:
    version: int  # lowest version over the shards
    env_frames: int  # highest env frames over the shards

    def beyond(self, other: Progress) -> bool:
        return self.version > other.version and self.env_frames > other.env_frames


class Cluster:
    """The processes of one run; `start` and `restart` them by name, e.g. "learner-1"."""

    def __init__(self, tmp: Path, **overrides):
        self.tmp = tmp
        self.run_dir: RunDir = make_run_dir(tmp / "run", **{**SETTINGS, **overrides})
        self.cfg = self.run_dir.load_config(environ={})
        self.procs: dict[str, Process] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._token = self.run_dir.read_secret()
        self._log_counter = 0

    # -- processes ---------------------------------------------------------------------------
    def start(self, role: str, index: int = 0) -> Process:
        name = f"{role}-{index}"
        if role in ("paramserver", "learner"):
            self.run_dir.remove_address(role, index)  # so waiting sees the new one
        self._log_counter += 1
        proc = Process(
            ba3c_command(role, "--run-dir", str(self.run_dir.path), "--index", str(index)),
            self.tmp / "proc-logs" / f"{name}.{self._log_counter}.out",
        )
        self.procs[name] = proc
        return proc

    def start_all(
        self, shards: int = 1, learners: int = 1, pools: int = 1, evaluator: bool = True
    ) -> None:
        for k in range(shards):
            self.start("paramserver", k)
        for k in range(learners):
            self.start("learner", k)
        for k in range(pools):
            self.start("simulator", k)
        if evaluator:
            self.start("evaluator", 0)

    def kill(self, name: str) -> float:
        """SIGKILL to the process (group) `name`; returns when it is gone."""
        proc = self.procs[name]
        proc.kill()
        return time.monotonic()

    def freeze(self, name: str) -> None:
        self.procs[name].signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.procs[name].signal(signal.SIGCONT)

    def restart(self, name: str) -> Process:
        role, index = name.rsplit("-", 1)
        old = self.procs[name]
        if old.alive():
            old.kill()
        return self.start(role, int(index))

    def alive(self, name: str) -> bool:
        return self.procs[name].alive()

    def stop_all(self) -> None:
        for channel in self._channels.values():
            channel.close()
        for name, proc in self.procs.items():
            proc.signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            code = proc.stop()
            print(f"----- {name} (exit {code}) -----\n{proc.output()[-2500:]}")

    def rss_mb(self, name: str) -> float:
        """Resident memory of the process `name` (the ba3c process itself), in MiB."""
        for line in Path(f"/proc/{self.procs[name].pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"{name} has no VmRSS")

    def log(self, name: str) -> str:
        path = self.run_dir.log_path(*name.rsplit("-", 1))
        return path.read_text(errors="replace") if path.exists() else ""

    # -- reading progress -----------------------------------------------------------------------
    def status(self, shard: int = 0, timeout: float = 2.0) -> pb.StatusResponse | None:
        address = self.run_dir.read_address("paramserver", shard)
        if not address:
            return None
        if address not in self._channels:
            self._channels[address] = rpc.make_channel(address, self._token)
        try:
            return pb_grpc.ParameterServerStub(self._channels[address]).Status(
                pb.StatusRequest(), timeout=timeout, wait_for_ready=False
            )
        except grpc.RpcError:
            return None

    def progress(self) -> Progress | None:
        replies = [self.status(k) for k in range(self.cfg.paramserver.ps)]
        if any(r is None or not r.initialized for r in replies):
            return None
        return Progress(min(r.version for r in replies), max(r.env_frames for r in replies))

    def wait_progress(self, beyond: Progress | None, timeout: float, what: str) -> Progress:
        """Waits until versions and frames both moved past `beyond` (or exist at all)."""

        def moved():
            now = self.progress()
            return now if now and (beyond is None or now.beyond(beyond)) else None

        return wait_for(moved, timeout, what, interval=0.2)

    def wait_training(self, timeout: float = STARTUP_SECONDS) -> Progress:
        """Waits until the run trains: two successive advances of versions and frames."""
        first = self.wait_progress(None, timeout, "the shards to be initialized")
        return self.wait_progress(first, timeout, "versions and frames to advance")

    def metrics(self, name: str) -> Metrics:
        """The /metrics of process NAME ("learner-1")."""
        role, index = name.rsplit("-", 1)
        return scrape(self.run_dir, role, int(index), timeout=3)

    def evaluations(self) -> int:
        return len(self.run_dir.evaluations())


def random_moment(seed: int, low: float = 0.2, high: float = 2.5) -> float:
    """Waits a random, reproducible time (the fault's moment); returns the delay."""
    delay = random.Random(seed).uniform(low, high)
    time.sleep(delay)  # not synchronisation: the point is to hit an arbitrary moment
    return round(delay, 2)
