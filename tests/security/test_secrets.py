"""The run's token stays secret and servers listen only where they were told, checked on a
real `ba3c train` run (all four services); unsafe secrets stop a real service at start."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path

import pytest

from ba3c.rundir import RunDir
from tests.faults.cluster import SETTINGS
from tests.support import Process, ba3c_command, make_run_dir, wait_for
from tests.support.metrics import scrape_address

TRAIN = [
    "--plain",
    "--progress-every",
    "2",
    "-e",
    "CartPole-v1",
    "--model",
    "mlp",
    "--batch_size",
    "32",
    "--simulator_procs",
    "8",
    "--eval_every",
    "2",
    "--eval_episodes",
    "1",
    "--eval_max_steps",
    "100",
    "--save_every",
    "5",
    "--pools",
    "1",
    "--learners",
    "1",
    "--ps",
    "1",
    "--minutes",
    "5",
]


def run_pids(run_dir: Path) -> list[int]:
    """Live processes whose command line names the run directory."""
    needle = str(run_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def listening(port: int) -> list[str]:
    """Local addresses with a listening TCP socket on `port` (IPv4 and IPv6)."""
    out = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            host_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(host_hex)
            if family == socket.AF_INET:
                raw = struct.pack("<I", struct.unpack(">I", raw)[0])
            else:
                raw = b"".join(struct.pack("<I", w) for w in struct.unpack(">4I", raw))
            out.append(socket.inet_ntop(family, raw))
    return out


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # gRPC may bind ::ffff:127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secrets")
    run_dir = RunDir(tmp / "run")
    train = Process(
        ba3c_command("train", "--run-dir", str(run_dir.path), *TRAIN), tmp / "train.out"
    )
    try:
        roles = ("paramserver-0", "learner-0", "simulator-0", "evaluator-0")
        wait_for(
            lambda: (
                all(run_dir.target_path(*r.rsplit("-", 1)).exists() for r in roles)
                and run_dir.read_address("learner", 0)
            ),
            240,
            "every process to publish",
        )
        wait_for(
            lambda: "learner" in train.output() and "version" in train.output(),
            120,
            "a progress line",
        )
        yield run_dir, train
    finally:
        train.stop(60)
        print(train.output()[-3000:])


def test_the_token_is_in_no_command_line_environment_or_process_title(live_run):
    run_dir, train = live_run
    token = run_dir.read_secret().encode()
    pids = run_pids(run_dir.path)
    assert train.pid in pids and len(pids) >= 5, pids  # the launcher and four services
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "comm", "environ"):
            try:
                data = (entry / part).read_bytes()
            except OSError:
                continue
            assert token not in data, f"the token is in /proc/{entry.name}/{part}"


def test_the_token_is_in_no_metrics_endpoint(live_run):
    run_dir, _ = live_run
    token = run_dir.read_secret()
    targets = list(run_dir.sub("targets").glob("*.json"))
    assert len(targets) >= 4
    for target in targets:
        address = target.read_text().split('"targets": [')[1].split('"')[1]
        # a process publishes its endpoint before it has imported all its metrics (the
        # evaluator imports TensorFlow first): wait until the page is ba3c's own
        text = wait_for(
            lambda a=address: "ba3c_" in (t := scrape_address(a).text) and t,
            120,
            f"ba3c's metrics on {target.name}",
            interval=0.5,
        )
        assert token not in text, f"the token is exported by {target.name}"


def test_servers_and_metrics_listen_on_loopback_only(live_run):
    run_dir, _ = live_run
    published = [*run_dir.addresses("paramserver").values(), *run_dir.addresses("learner").values()]
    for target in run_dir.sub("targets").glob("*.json"):
        published.append(target.read_text().split('"targets": [')[1].split('"')[1])
    assert len(published) >= 6
    for address in published:
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1", address
        bound = listening(int(port))
        assert bound, f"nothing listens on {address}"
        assert all(loopback(b) for b in bound), f"{address} is bound to {bound}"


def test_the_token_is_in_no_log_or_output_after_the_run(live_run):
    run_dir, train = live_run
    train.stop(60)
    token = run_dir.read_secret()
    files = [
        p
        for p in run_dir.path.rglob("*")
        if p.is_file() and p != run_dir.secret_path and p.suffix not in (".ckpt",)
    ]
    logs = [p for p in files if p.parent.name == "logs"]
    assert len(logs) >= 4
    for path in files:
        assert token.encode() not in path.read_bytes(), f"the token is in {path}"
    assert token not in train.output()


def test_the_secret_is_private(live_run):
    run_dir, _ = live_run
    assert os.stat(run_dir.secret_path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("role", ["paramserver", "simulator"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secret_others_can_read_stops_the_service_with_one_line(tmp_path, role, mode):
    run_dir = make_run_dir(tmp_path / "run", **SETTINGS)
    os.chmod(run_dir.secret_path, mode)
    proc = Process(ba3c_command(role, "--run-dir", str(run_dir.path)), tmp_path / "out")
    try:
        assert proc.popen.wait(120) == 2
    finally:
        proc.stop()
    out = proc.output().strip()
    assert f"{run_dir.secret_path} is readable by others (mode {mode:04o})" in out
    assert "chmod 600" in out and "Traceback" not in out
    assert len(out.splitlines()) == 1, out
    assert run_dir.read_address(role, 0) is None and not run_dir.target_path(role, 0).exists()


def test_a_missing_secret_stops_the_service_with_one_line(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", **SETTINGS)
    run_dir.secret_path.unlink()
    proc = Process(ba3c_command("paramserver", "--run-dir", str(run_dir.path)), tmp_path / "out")
    try:
        assert proc.popen.wait(120) == 2
    finally:
        proc.stop()
    out = proc.output().strip()
    assert "secret does not exist" in out and "Traceback" not in out
