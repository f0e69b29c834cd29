"""The namespace hosts themselves: own names and addresses, Slurm steps on the right host,
links that cut a host off and bring it back, /etc/hosts entries kept apart from others."""

from __future__ import annotations

import socket
import sys

import pytest

from tests.multihost.cluster import (
    BRIDGE_ADDRESS,
    HOSTS,
    HOSTS_MARK,
    ClusterError,
    write_hosts_lines,
)
from tests.support import wait_for

H1, H2 = HOSTS[0], HOSTS[1]
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)"


def test_each_slurm_node_runs_its_steps_on_its_own_host(hosts, tmp_path):
    out = tmp_path / "where"
    nodes = ",".join(h.name for h in HOSTS)
    done = hosts.run(
        "srun",
        f"--nodelist={nodes}",
        "--nodes=4",
        "--ntasks=4",
        f"--output={out}-%t",
        "bash",
        "-c",
        'echo "$SLURMD_NODENAME $(hostname) $(hostname -I)"',
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = sorted(tuple((tmp_path / f"where-{t}").read_text().split()) for t in range(4))
    assert rows == [(h.name, h.name, h.address) for h in HOSTS]
    for h in HOSTS:
        assert socket.gethostbyname(h.name) == h.address


def test_a_link_down_cuts_a_host_off_and_up_brings_it_back(hosts):
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # root namespace: reached over the bridge
        listener.listen()
        port = str(listener.getsockname()[1])
        bridge = BRIDGE_ADDRESS
        hosts.in_namespace(H2, sys.executable, "-c", CONNECT, bridge, port)
        hosts.link(H2, up=False)
        try:
            with pytest.raises(ClusterError):
                hosts.in_namespace(H2, sys.executable, "-c", CONNECT, bridge, port)
            hosts.in_namespace(H1, sys.executable, "-c", CONNECT, bridge, port)  # others fine
        finally:
            hosts.link(H2, up=True)
        wait_for(
            lambda: hosts.in_namespace(H2, sys.executable, "-c", CONNECT, bridge, port) == "",
            15,
            "ba3c-h2 to reach the bridge again",
            interval=0.2,
        )


def test_hosts_lines_are_replaced_whole_and_other_lines_kept(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n127.0.0.1 node1 node2  # ba3c Slurm tests\n")
    write_hosts_lines(list(HOSTS[:2]), path)
    write_hosts_lines(list(HOSTS), path)  # again: replaced, not added twice
    lines = path.read_text().splitlines()
    assert lines[:2] == ["127.0.0.1 localhost", "127.0.0.1 node1 node2  # ba3c Slurm tests"]
    assert lines[2:] == [f"{h.address} {h.name}  {HOSTS_MARK}" for h in HOSTS]
    write_hosts_lines([], path)
    assert path.read_text().splitlines() == lines[:2]
