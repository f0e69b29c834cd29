"""Which address a server binds and which one it advertises in RUN_DIR/addresses/.

Three knobs decide (config.NetConfig): `host` (BA3C_HOST) is what servers bind and, unless
told otherwise, also what they advertise; `advertise_host` (BA3C_ADVERTISE_HOST) is the
name or address written for others to dial; `net_interface` (BA3C_NET_INTERFACE, e.g.
ib0) picks the network: the interface's IPv4 address is bound and advertised. With none
set a server binds and advertises its node's hostname under Slurm, else 127.0.0.1.

A wildcard (0.0.0.0, ::) may be bound but is never advertised: the node's hostname is
advertised instead. When the Slurm job spans more than one host, an advertised name that
resolves to loopback (Debian's 127.0.1.1 for the own hostname) is refused at start: no
other node could reach it. One host (every node name resolves to the same address, as in
the one-machine test cluster) keeps loopback legal.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", "*"})
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


class AddressError(ValueError):
    """The addressing knobs cannot work on this node; the message says what to change."""


@dataclass(frozen=True)
class Endpoint:
    bind: str  # what the server listens on
    advertise: str  # what RUN_DIR/addresses/ and targets/ tell others to dial


def interface_ipv4(name: str) -> str:
    """The IPv4 address of network interface `name` (Linux), or AddressError."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError as e:
            known = ", ".join(n for _, n in socket.if_nameindex())
            raise AddressError(
                f"network interface {name!r} has no IPv4 address on {socket.gethostname()} "
                f"({e.strerror}); interfaces here: {known}"
            ) from None
    return socket.inet_ntoa(packed[20:24])


def expand_hostlist(spec: str) -> Iterator[str]:
    """Slurm's compressed host list (node[01-03,7],gpu1) one name at a time."""
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", spec):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            yield part
            continue
        prefix, ranges, rest = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            for n in range(int(low), int(high or low) + 1):
                for tail in expand_hostlist(rest) if "[" in rest else [rest]:
                    yield f"{prefix}{n:0{len(low)}d}{tail}"


def job_nodes(environ: Mapping[str, str]) -> list[str]:
    """Every node of the Slurm job, all het components included (first seen first)."""
    specs = [v for k, v in sorted(environ.items()) if k.startswith("SLURM_JOB_NODELIST_HET_GROUP_")]
    specs = specs or [environ.get("SLURM_JOB_NODELIST", "")]
    return list(dict.fromkeys(n for spec in specs if spec for n in expand_hostlist(spec)))


def _addresses(name: str) -> frozenset[str]:
    try:
        return frozenset(info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET))
    except OSError:
        return frozenset({f"unresolved:{name}"})  # counts as a host of its own


def spans_hosts(nodes: list[str], resolve: Callable[[str], frozenset[str]] = _addresses) -> bool:
    """True when the nodes are more than one machine: their names resolve differently.

    Stops at the second distinct answer, so a big job costs two lookups, not thousands.
    """
    first = None
    for node in nodes:
        found = resolve(node)
        if first is None:
            first = found
        elif found != first:
            return True
    return False


def is_loopback(name: str, resolve: Callable[[str], frozenset[str]] = _addresses) -> bool:
    """True if `name` (an address or a host name) resolves only to loopback addresses."""
    found = resolve(name)
    try:
        return all(ipaddress.ip_address(a).is_loopback for a in found)
    except ValueError:  # unresolved
        return False


def endpoint(
    host: str = "",
    advertise_host: str = "",
    net_interface: str = "",
    environ: Mapping[str, str] | None = None,
    hostname: Callable[[], str] = socket.gethostname,
    resolve: Callable[[str], frozenset[str]] = _addresses,
    interface: Callable[[str], str] = interface_ipv4,
) -> Endpoint:
    """Bind and advertised address from the three knobs and the environment; raises
    AddressError when the advertised address could not work (see the module docstring)."""
    environ = os.environ if environ is None else environ
    slurm = bool(environ.get("SLURM_JOB_ID"))
    picked = interface(net_interface) if net_interface else ""
    bind = host or picked or advertise_host or (hostname() if slurm else "127.0.0.1")
    advertise = advertise_host or picked or bind
    if advertise in WILDCARDS:
        advertise = hostname()
    if slurm and is_loopback(advertise, resolve):
        nodes = job_nodes(environ)
        if spans_hosts(nodes, resolve):
            raise AddressError(
                f"this Slurm job spans {len(nodes)} nodes, but the address this server would "
                f"advertise, {advertise!r}, resolves to loopback "
                f"({', '.join(sorted(resolve(advertise)))}) on {hostname()}: other nodes could "
                "not reach it. Pick the network with --net_interface IFACE (BA3C_NET_INTERFACE, "
                "e.g. eth0 or ib0), or set --host/--advertise_host to a reachable address"
            )
    return Endpoint(bind=bind, advertise=advertise)
