"""A real Slurm cluster on one machine: munged, slurmctld and four slurmd (node1..node4).

Every node is this host (127.0.0.1) with its own slurmd port, so a heterogeneous job's
components land on different node names while all processes share the machine. Daemons run
in the foreground as our children and are stopped by PID. Needs root on Debian with the
packages from tests/system-deps.sh; anywhere else `start` raises ClusterError saying why.

The slurm.conf settings, node line, daemon start and munge check here are also those of
the namespace-host cluster (tests/multihost/cluster.py), which adds only its differences.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import wait_for

NODES = ("node1", "node2", "node3", "node4")
CPUS_PER_NODE = 16
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")

# Settings every test cluster shares (one-host here, namespace hosts in tests/multihost);
# each harness adds its own: ports, paths, partitions, timeouts.
BASE_SETTINGS = {
    "SlurmUser": "root",
    "SlurmdUser": "root",
    "AuthType": "auth/munge",
    "CredType": "cred/munge",
    "MpiDefault": "none",
    "ProctrackType": "proctrack/linuxproc",
    "TaskPlugin": "task/none",
    "JobAcctGatherType": "jobacct_gather/none",
    "AccountingStorageType": "accounting_storage/none",
    "SwitchType": "switch/none",
    "SelectType": "select/cons_tres",
    "SelectTypeParameters": "CR_Core",
    "SlurmdParameters": "config_overrides",
    "ReturnToService": "2",
    "MailProg": "/bin/true",
    "SchedulerType": "sched/backfill",
    "SchedulerParameters": "bf_interval=1,bf_resolution=1",
    "SlurmdSpoolDir": "{tmp}/spool/d/%n",
    "StateSaveLocation": "{tmp}/spool/ctld",
    "SlurmdPidFile": "{tmp}/run/slurmd-%n.pid",
    "SlurmctldLogFile": "{tmp}/log/slurmctld.log",
    "SlurmdLogFile": "{tmp}/log/slurmd-%n.log",
    "InactiveLimit": "0",
    # Time between SIGTERM and SIGKILL when a job ends: paramservers checkpoint in between.
    "KillWait": "30",
    "MinJobAge": "300",
    "SlurmctldTimeout": "30",
    "Waittime": "0",
}
NODE_LINE = (
    "NodeName={name} NodeHostname={hostname} NodeAddr={address} Port={port} CPUs={cpus} "
    "Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory=16000 "
    "State=UNKNOWN"
)


def slurm_conf(tmp: Path, settings: dict[str, str], nodes: list[str], partitions: list[str]) -> str:
    """slurm.conf: BASE_SETTINGS with `settings` over them ({tmp} filled in), then the
    node lines (NODE_LINE) and partition lines."""
    merged = {**BASE_SETTINGS, **settings}
    lines = [f"{key}={value.format(tmp=tmp)}" for key, value in merged.items()]
    return "\n".join([*lines, *nodes, *partitions]) + "\n"


def _one_host_conf(tmp: Path, ctld_port: int, node_ports: list[int]) -> str:
    n = len(NODES)
    return slurm_conf(
        tmp,
        {
            "ClusterName": "ba3ctest",
            "SlurmctldHost": "localhost",
            "SlurmctldPort": str(ctld_port),
            "SlurmctldPidFile": "{tmp}/run/slurmctld.pid",
            "SlurmdTimeout": "60",
            # Preemption as sites set it up for checkpointing jobs: a job in `urgent` requeues
            # one in `debug`, which first gets its --signal (preempt_send_user_signal) and
            # GraceTime to stop.
            "PreemptType": "preempt/partition_prio",
            "PreemptMode": "REQUEUE",
            "SlurmctldParameters": "preempt_send_user_signal",
        },
        [
            NODE_LINE.format(
                name=name, hostname="localhost", address="127.0.0.1", port=port, cpus=CPUS_PER_NODE
            )
            for name, port in zip(NODES, node_ports, strict=True)
        ],
        [
            f"PartitionName=debug Nodes=node[1-{n}] Default=YES MaxTime=INFINITE State=UP "
            "OverSubscribe=NO PriorityTier=1 GraceTime=60",
            f"PartitionName=urgent Nodes=node[1-{n}] MaxTime=INFINITE State=UP "
            "OverSubscribe=NO PriorityTier=2 PreemptMode=OFF",
        ],
    )


class ClusterError(RuntimeError):
    """The cluster cannot run here; the message says what is missing."""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check_host() -> None:
    """Root on Debian with Slurm and munge installed, or ClusterError."""
    if os.geteuid() != 0:
        raise ClusterError("the Slurm tests need root (CI runs them as root)")
    if not Path("/etc/debian_version").exists():
        raise ClusterError("the Slurm tests need Debian (slurm-wlm and munge packages)")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing)}: run `make system-deps` (installs slurm-wlm, munge)"
        )


def ensure_hosts(names=NODES, hosts=Path("/etc/hosts")) -> None:
    """Makes node1..node4 resolve to 127.0.0.1 (idempotent)."""
    missing = []
    for name in names:
        try:
            socket.gethostbyname(name)
        except OSError:
            missing.append(name)
    if missing:
        with open(hosts, "a") as f:
            f.write(f"127.0.0.1 {' '.join(missing)}  # ba3c Slurm tests\n")


def munge_works(munge_socket: Path | None = None) -> bool:
    """A credential made by `munge` is accepted by `unmunge` (on `munge_socket`, else the
    default one)."""
    flags = [f"--socket={munge_socket}"] if munge_socket else []
    enc = subprocess.run(["munge", *flags, "-n"], capture_output=True)
    if enc.returncode != 0:
        return False
    decoded = subprocess.run(["unmunge", *flags], input=enc.stdout, capture_output=True)
    return decoded.returncode == 0


@dataclass
class Cluster:
    """A running cluster; `env` holds SLURM_CONF for every Slurm command."""

    tmp: Path
    conf: Path
    env: dict[str, str]
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(
        self, *args: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Runs a Slurm client command against this cluster."""
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def jobs(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i %T", check=False).stdout.splitlines()

    def job_states(self, job_id: str) -> list[str]:
        """JobState of each component of the job (one entry for a plain job)."""
        out = self.run("scontrol", "show", "job", job_id, check=False).stdout
        return [w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")]

    def log(self, name: str) -> str:
        path = self.tmp / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Cancels every job, then stops the daemons we started, by PID."""
        if self.daemons.get("slurmctld") and self.daemons["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user=root", check=False)
            try:
                wait_for(lambda: not self.jobs(), 60, "all jobs to leave the queue")
            except AssertionError:
                pass
        for proc in reversed(self.daemons.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.daemons.values()):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def daemon(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A daemon in the foreground, our child in a session of its own, output to `log`."""
    return subprocess.Popen(
        args,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def start(tmp: Path) -> Cluster:
    """Starts munged (unless one answers already), slurmctld and one slurmd per node, and
    waits until every node is idle."""
    check_host()
    ensure_hosts()
    for sub in ("spool/ctld", "spool/d", "run", "log"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    ctld_port, *node_ports = free_ports(1 + len(NODES))
    conf = tmp / "slurm.conf"
    conf.write_text(_one_host_conf(tmp, ctld_port, node_ports))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(tmp=tmp, conf=conf, env=env)
    try:
        if not munge_works():
            subprocess.run(
                ["install", "-d", "-o", "munge", "-g", "munge", "-m755", "/run/munge"], check=True
            )
            for d in ("/etc/munge", "/var/log/munge", "/var/lib/munge"):
                if Path(d).is_dir():
                    os.chmod(d, 0o700)
            if not Path("/etc/munge/munge.key").exists():
                subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
            cluster.daemons["munged"] = daemon(
                ["runuser", "-u", "munge", "--", "munged", "--foreground"],
                tmp / "log" / "munged.out",
                env,
            )
            wait_for(munge_works, 30, "munged to answer on " + str(MUNGE_SOCKET), interval=0.2)
        cluster.daemons["slurmctld"] = daemon(
            ["slurmctld", "-D", "-f", str(conf)], tmp / "log" / "slurmctld.out", env
        )
        wait_for(
            lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP"),
            30,
            "slurmctld to answer `scontrol ping`",
            interval=0.2,
        )
        for name in NODES:
            cluster.daemons[name] = daemon(
                ["slurmd", "-D", "-N", name, "-f", str(conf)], tmp / "log" / f"{name}.out", env
            )
        wait_for(
            lambda: (
                sorted(n for n, s in cluster.node_states().items() if s == "idle") == sorted(NODES)
            ),
            60,
            "all four nodes to be idle in sinfo",
            interval=0.3,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_for_job_end(cluster: Cluster, job_id: str, timeout: float) -> str:
    """Polls until every component of the job ended and its processes are gone (no longer
    COMPLETING); returns the state of the first component (the batch script's)."""
    done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    states = wait_for(
        lambda: (s := cluster.job_states(job_id)) and all(x in done for x in s) and s,
        timeout,
        f"job {job_id} to end",
        interval=0.5,
    )
    return states[0]
