"""What a server binds and what it advertises (ba3c/netaddr.py): in-process rules, then a
real paramserver bound on 0.0.0.0 that advertises a name, and one refused at start."""

from __future__ import annotations

import socket

import pytest

from ba3c import netaddr, rpc
from tests.support import Process, ba3c_command, make_run_dir, wait_for

# Three "nodes" on two machines; node1's own name resolves to Debian's 127.0.1.1.
DNS = {
    "node1": frozenset({"127.0.1.1"}),
    "node2": frozenset({"10.0.0.2"}),
    "node3": frozenset({"10.0.0.3"}),
    "one1": frozenset({"127.0.0.1"}),
    "one2": frozenset({"127.0.0.1"}),
    "127.0.0.1": frozenset({"127.0.0.1"}),
    "10.9.0.1": frozenset({"10.9.0.1"}),
    "ibnode1": frozenset({"10.9.0.1"}),
}
MULTI = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node[1-3]"}


def where(environ, host="", advertise="", iface="", name="node1"):
    return netaddr.endpoint(
        host,
        advertise,
        iface,
        environ=environ,
        hostname=lambda: name,
        resolve=DNS.__getitem__,
        interface={"ib0": "10.9.0.1"}.__getitem__,
    )


def test_outside_slurm_loopback_unless_told():
    assert where({}) == netaddr.Endpoint("127.0.0.1", "127.0.0.1")
    # BA3C_HOST alone binds and advertises, as it always did (the multi-host cluster uses it).
    assert where({}, host="198.18.0.2") == netaddr.Endpoint("198.18.0.2", "198.18.0.2")


def test_a_wildcard_bind_advertises_the_hostname_never_0000():
    assert where({}, host="0.0.0.0", name="ibnode1") == netaddr.Endpoint("0.0.0.0", "ibnode1")
    assert where({}, host="::", name="ibnode1").advertise == "ibnode1"
    assert where({}, host="0.0.0.0", advertise="10.9.0.1").advertise == "10.9.0.1"


def test_an_interface_is_bound_and_advertised_unless_host_says_otherwise():
    assert where(MULTI, iface="ib0") == netaddr.Endpoint("10.9.0.1", "10.9.0.1")
    assert where(MULTI, host="0.0.0.0", iface="ib0") == netaddr.Endpoint("0.0.0.0", "10.9.0.1")


def test_an_advertised_name_alone_is_also_bound():
    assert where(MULTI, advertise="ibnode1") == netaddr.Endpoint("ibnode1", "ibnode1")


def test_a_job_over_several_hosts_refuses_a_loopback_name():
    with pytest.raises(netaddr.AddressError, match=r"spans 3 nodes.*'node1'.*127\.0\.1\.1"):
        where(MULTI)
    with pytest.raises(netaddr.AddressError, match="--net_interface"):
        where(MULTI, host="0.0.0.0")  # advertises the hostname: loopback too
    het = {
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NODELIST_HET_GROUP_0": "node1",
        "SLURM_JOB_NODELIST_HET_GROUP_1": "node[2-3]",
    }
    with pytest.raises(netaddr.AddressError):
        where(het)
    assert where(het, iface="ib0").advertise == "10.9.0.1"


def test_one_host_keeps_loopback_legal():
    # Every node name resolves to the same address: the one-machine test cluster.
    one = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "one[1-2]"}
    assert where(one, name="one1") == netaddr.Endpoint("one1", "one1")
    assert where({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node1"}).advertise == "node1"


def test_slurm_host_lists_expand():
    assert list(netaddr.expand_hostlist("gpu[01-03,7],login,r[1-2]c[1-2]")) == [
        "gpu01",
        "gpu02",
        "gpu03",
        "gpu7",
        "login",
        "r1c1",
        "r1c2",
        "r2c1",
        "r2c2",
    ]


def test_a_missing_interface_names_the_ones_there():
    with pytest.raises(netaddr.AddressError, match="'nosuch0'.*interfaces here:.*lo"):
        netaddr.interface_ipv4("nosuch0")
    assert netaddr.interface_ipv4("lo") == "127.0.0.1"


def test_a_real_paramserver_binds_all_interfaces_and_advertises_a_name(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", ps=1)
    env = {"BA3C_HOST": "0.0.0.0", "BA3C_ADVERTISE_HOST": "localhost"}
    server = Process(
        ba3c_command("paramserver", "--run-dir", str(run_dir.path)), tmp_path / "ps.out", env
    )
    try:
        address = wait_for(lambda: run_dir.read_address("paramserver", 0), 60, "an address")
        host, port = address.rsplit(":", 1)
        assert host == "localhost", address
        target = run_dir.target_path("paramserver", 0).read_text()
        assert '"localhost:' in target, target
        # Bound on every interface: reachable through eth0's address too, not only loopback.
        others = [a for a in _ipv4_addresses() if not a.startswith("127.")]
        for dial in [address, *(f"{a}:{port}" for a in others[:1])]:
            with rpc.make_channel(dial, run_dir.read_secret()) as channel:
                rpc.wait_until_serving(channel, 30)
    finally:
        assert server.stop() == 0, server.output()


def test_a_real_service_refuses_loopback_in_a_job_over_two_hosts(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", ps=1)
    # 127.0.0.1 and 192.0.2.1 are two machines; this node's name resolves to loopback here.
    env = {
        "SLURM_JOB_ID": "1",
        "SLURM_JOB_NODELIST": "127.0.0.1,192.0.2.1",
        "BA3C_HOST": "127.0.0.1",
    }
    proc = Process(
        ba3c_command("paramserver", "--run-dir", str(run_dir.path)), tmp_path / "ps.out", env
    )
    assert proc.popen.wait(60) == 2, proc.output()
    out = proc.output()
    assert "ba3c paramserver: error: this Slurm job spans 2 nodes" in out, out
    assert "Traceback" not in out
    assert run_dir.read_address("paramserver", 0) is None


def _ipv4_addresses() -> list[str]:
    return [netaddr.interface_ipv4(name) for _, name in socket.if_nameindex() if _has_ipv4(name)]


def _has_ipv4(name: str) -> bool:
    try:
        netaddr.interface_ipv4(name)
    except netaddr.AddressError:
        return False
    return True
