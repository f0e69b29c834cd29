"""Four real hosts on this machine: network namespaces on a bridge, a slurmd in each.

Each host is a network namespace (ba3cmh1..4) with its own hostname (ba3c-h1..4, via
`unshare --uts`) and its own address from the benchmarking range 198.18.0.0/15, linked to
the bridge ba3cmh0 in the root namespace by a veth pair. /etc/hosts maps the names to the
addresses while the cluster runs. slurmctld and a munged of its own (own socket, so the
one-host harness in tests/slurm/ can run beside it) stay in the root namespace; each host's
slurmd runs inside its namespace with NodeAddr = the host's address, so every job step and
every service it starts lives on that host and reaches the others only over the bridge.

Faults are links: `link(host, up=False)` takes the host's veth down (tc netem is not
available here). `start` first removes what a crashed earlier run left behind; `stop` tears
everything down in reverse order, carrying on past errors. Needs root, `ip` and `unshare`,
and Slurm and munge (tests/system-deps.sh); anywhere else `start` raises ClusterError.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.slurm.cluster import (
    NODE_LINE,
    Cluster,
    ClusterError,
    daemon,
    free_ports,
    munge_works,
    slurm_conf,
    wait_for_job_end,
)
from tests.slurm.cluster import check_host as check_slurm
from tests.support import wait_for

__all__ = ["ClusterError", "Host", "MultiHostCluster", "start", "wait_for_job_end"]

PREFIX = "ba3cmh"  # namespaces ba3cmh1..4, bridge ba3cmh0, root ends of the veths ba3cmhv1..4
NAMES = ("ba3c-h1", "ba3c-h2", "ba3c-h3", "ba3c-h4")
NET = "198.18.14"  # a /24 of 198.18.0.0/15 (never routed off the machine)
BRIDGE = f"{PREFIX}0"
BRIDGE_ADDRESS = f"{NET}.1"
SLURMD_PORT = 6818  # the same port on every host: each has its own network stack
# Slurm refuses a hetjob whose components ask for the same node, yet the evaluator shares
# host 4 with a pool: host 4 runs a second slurmd, node EXTRA_NODE, on the next port.
EXTRA_NODE = "ba3c-h4b"
STATE = Path("/run/ba3c-multihost")  # pid files and munge socket, found again after a crash
MUNGE_SOCKET = STATE / "munge" / "munge.socket"
MUNGED_PID = STATE / "munge" / "munged.pid"
HOSTS_FILE = Path("/etc/hosts")
HOSTS_MARK = "# ba3c multihost tests"
CPUS_PER_NODE = 16


@dataclass(frozen=True)
class Host:
    """One namespace host: its node name, namespace, address and the bridge end of its link."""

    number: int

    @property
    def name(self) -> str:
        return NAMES[self.number - 1]

    @property
    def namespace(self) -> str:
        return f"{PREFIX}{self.number}"

    @property
    def address(self) -> str:
        return f"{NET}.{10 + self.number}"

    @property
    def link_name(self) -> str:
        return f"{PREFIX}v{self.number}"

    def enter(self) -> list[str]:
        """The command prefix that runs a command in this host's network namespace.
        (Not `ip netns exec`: it remounts /sys, hiding the cgroup file system slurmd needs.)"""
        return ["nsenter", f"--net=/run/netns/{self.namespace}"]


HOSTS = tuple(Host(i) for i in range(1, len(NAMES) + 1))


@dataclass(frozen=True)
class Node:
    """A Slurm node: one slurmd on a host, on its own port."""

    name: str
    host: Host
    port: int


NODES = (
    *(Node(h.name, h, SLURMD_PORT) for h in HOSTS),
    Node(EXTRA_NODE, HOSTS[3], SLURMD_PORT + 1),
)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ClusterError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def check_host() -> None:
    """Root with `ip`, `unshare`, Slurm and munge, or ClusterError saying what is missing."""
    check_slurm()
    missing = [
        b for b in ("ip", "ss", "nsenter", "unshare", "munged", "munge") if shutil.which(b) is None
    ]
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing)}: the multi-host tests need iproute2, util-linux "
            "and munge (`make system-deps`)"
        )


# ---------------------------------------------------------------------------------------
# What a crashed run leaves behind, and the network


def _kill_pidfile(path: Path, binary: str) -> None:
    """SIGKILLs the process in pid file `path` if it is still `binary`; removes the file."""
    try:
        pid = int(path.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        pid, cmdline = 0, b""
    if pid and binary.encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def _kill_namespace_processes(host: Host) -> None:
    listed = _ip("netns", "pids", host.namespace, check=False).stdout.split()
    for pid in listed:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_leftovers() -> None:
    """Removes namespaces, links, daemons and /etc/hosts lines of an earlier run."""
    for host in HOSTS:
        if host.namespace in _ip("netns", "list", check=False).stdout.split():
            _kill_namespace_processes(host)
            _ip("netns", "delete", host.namespace, check=False)
        _ip("link", "delete", host.link_name, check=False)
    _ip("link", "delete", BRIDGE, check=False)
    _kill_pidfile(STATE / "slurmctld.pid", "slurmctld")
    _kill_pidfile(MUNGED_PID, "munged")
    _kill_pidfile(STATE / "prometheus.pid", "prometheus")
    write_hosts_lines([])


def build_network() -> None:
    """The bridge with its address, and per host a namespace, a veth pair and an address."""
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for host in HOSTS:
        _ip("netns", "add", host.namespace)
        _ip(*f"link add {host.link_name} type veth peer name eth0 netns {host.namespace}".split())
        _ip("link", "set", host.link_name, "master", BRIDGE, "up")
        ns = ("-n", host.namespace)
        _ip(*ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip(*ns, "link", "set", "eth0", "up")
        _ip(*ns, "link", "set", "lo", "up")


def cluster_running() -> bool:
    """Whether the slurmctld of a multi-host cluster (this module's) is alive."""
    try:
        pid = int((STATE / "slurmctld.pid").read_text().split()[0])
        return b"slurmctld" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False


@contextlib.contextmanager
def namespace_hosts() -> Iterator[tuple[Host, ...]]:
    """The four hosts' network and names alone, without Slurm (bench/multihost.py starts the
    services itself). Refuses to run beside a live cluster, which uses the same names."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        raise ClusterError("namespace hosts need root with `ip` (iproute2) and `nsenter`")
    if cluster_running():
        raise ClusterError(
            "the multi-host test cluster is running (its slurmctld is alive); wait for it"
        )
    remove_leftovers()
    try:
        build_network()
        write_hosts_lines(list(HOSTS))
        yield HOSTS
    finally:
        remove_network()
        write_hosts_lines([])


def remove_network() -> None:
    for host in reversed(HOSTS):
        _kill_namespace_processes(host)
        _ip("netns", "delete", host.namespace, check=False)
        _ip("link", "delete", host.link_name, check=False)
    _ip("link", "delete", BRIDGE, check=False)


def write_hosts_lines(hosts: list[Host], path: Path = HOSTS_FILE) -> None:
    """Replaces our lines in /etc/hosts with one per host (none: removes them), atomically:
    a new file renamed over the old one, so no reader ever sees half of it."""
    kept = [line for line in path.read_text().splitlines() if not line.endswith(HOSTS_MARK)]
    ours = [f"{h.address} {h.name}  {HOSTS_MARK}" for h in hosts]
    if not ours and len(kept) == len(path.read_text().splitlines()):
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hosts-ba3c-")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(kept + ours) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# The cluster


@dataclass
class MultiHostCluster(Cluster):
    """A running cluster; `env` holds SLURM_CONF for every Slurm command."""

    hosts: tuple[Host, ...] = HOSTS
    torn_down: list[str] = field(default_factory=list)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def link(self, host: Host, up: bool) -> None:
        """Takes the host's only link to the others down, or brings it back up."""
        _ip("link", "set", host.link_name, "up" if up else "down")

    def in_namespace(self, host: Host, *args: str, timeout: float = 30) -> str:
        """Runs a command on `host` (in its namespace) and returns its output."""
        done = subprocess.run(
            [*host.enter(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise ClusterError(f"{args} on {host.name} failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        """Jobs, slurmd, slurmctld and munged, then the network and the names; every step
        runs even when an earlier one failed, and the first error is raised at the end."""
        errors: list[BaseException] = []
        for step in (
            lambda: [_ip("link", "set", h.link_name, "up", check=False) for h in self.hosts],
            super().stop,
            remove_network,
            lambda: write_hosts_lines([]),
            lambda: _kill_pidfile(MUNGED_PID, "munged"),
        ):
            try:
                step()
            except BaseException as e:  # noqa: BLE001 - tear down the rest first
                errors.append(e)
        if errors:
            raise errors[0]


def _start_munged(cluster: MultiHostCluster) -> None:
    """A munged of our own, on its own socket, with the machine's key."""
    if not Path("/etc/munge/munge.key").exists():
        subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
    subprocess.run(
        ["install", "-d", "-o", "munge", "-g", "munge", "-m755", str(MUNGE_SOCKET.parent)],
        check=True,
    )
    cluster.daemons["munged"] = daemon(
        [
            "runuser",
            "-u",
            "munge",
            "--",
            "munged",
            "--foreground",
            f"--socket={MUNGE_SOCKET}",
            f"--pid-file={MUNGED_PID}",
            f"--seed-file={STATE / 'munge' / 'munged.seed'}",
            f"--log-file={STATE / 'munge' / 'munged.log'}",
        ],
        cluster.tmp / "log" / "munged.out",
        cluster.env,
    )
    wait_for(lambda: munge_works(MUNGE_SOCKET), 30, f"munged on {MUNGE_SOCKET}", interval=0.2)


def _start_slurmd(cluster: MultiHostCluster, node: Node) -> None:
    """slurmd inside the host's namespace, with the host's own hostname (new UTS namespace).
    `nsenter`, `unshare` and `sh` all exec: the Popen's pid is slurmd's."""
    script = f"hostname {node.host.name} && exec slurmd -D -N {node.name} -f {cluster.conf}"
    cluster.daemons[node.name] = daemon(
        [*node.host.enter(), "unshare", "--uts", "sh", "-c", script],
        cluster.tmp / "log" / f"{node.name}.out",
        cluster.env,
    )


def _namespace_hosts_conf(tmp: Path, ctld_port: int) -> str:
    return slurm_conf(
        tmp,
        {
            "ClusterName": "ba3cmultihost",
            "SlurmctldHost": f"localhost({BRIDGE_ADDRESS})",
            "SlurmctldPort": str(ctld_port),
            "AuthInfo": f"socket={MUNGE_SOCKET}",
            "SlurmctldPidFile": f"{STATE}/slurmctld.pid",
            # Links go down in the fault tests for a few seconds: far less than this.
            "SlurmdTimeout": "120",
            "MessageTimeout": "20",
        },
        [
            NODE_LINE.format(
                name=n.name,
                hostname=n.host.name,
                address=n.host.address,
                port=n.port,
                cpus=CPUS_PER_NODE,
            )
            for n in NODES
        ],
        [
            f"PartitionName=hosts Nodes={','.join(n.name for n in NODES)} Default=YES "
            "MaxTime=INFINITE State=UP OverSubscribe=NO"
        ],
    )


def start(tmp: Path) -> MultiHostCluster:
    """Builds the network and names, starts munged, slurmctld and one slurmd per host, and
    waits until every node is idle. Anything that fails on the way is torn down again."""
    check_host()
    remove_leftovers()
    STATE.mkdir(parents=True, exist_ok=True)
    for sub in ("spool/ctld", "spool/d", "run", "log"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    (ctld_port,) = free_ports(1)
    conf = tmp / "slurm.conf"
    conf.write_text(_namespace_hosts_conf(tmp, ctld_port))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = MultiHostCluster(tmp=tmp, conf=conf, env=env)
    try:
        build_network()
        write_hosts_lines(list(HOSTS))
        _start_munged(cluster)
        cluster.daemons["slurmctld"] = daemon(
            ["slurmctld", "-D", "-f", str(conf)], tmp / "log" / "slurmctld.out", env
        )
        wait_for(
            lambda: "UP" in cluster.run("scontrol", "ping", check=False).stdout,
            30,
            "slurmctld to answer `scontrol ping`",
            interval=0.2,
        )
        for node in NODES:
            _start_slurmd(cluster, node)
        wait_for(
            lambda: (
                sorted(n for n, s in cluster.node_states().items() if s == "idle")
                == sorted(n.name for n in NODES)
            ),
            60,
            "every node on the namespace hosts to be idle in sinfo",
            interval=0.3,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster
