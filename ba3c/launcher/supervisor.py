"""Starting, watching, restarting and stopping the processes of a local run.

Each child runs `ba3c ROLE --run-dir D --index I` in its own session (so a Ctrl-C in the
terminal reaches only the launcher, which then stops the children in order) with its
output in RUN_DIR/logs/ROLE-I.out. On Linux a child also gets SIGTERM if the launcher
dies, so no orphan outlives a killed launcher.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ba3c.launcher.topology import ROLES, ProcessSpec
from ba3c.rundir import RunDir

log = structlog.get_logger()

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Child:
    spec: ProcessSpec
    out_path: Path
    popen: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Supervisor:
    """Keeps a run's processes alive within their restart budget."""

    def __init__(
        self, run_dir: RunDir, specs: list[ProcessSpec], report: Callable[[str], None] = print
    ):
        self.run_dir = run_dir
        self.report = report
        self.children = [Child(s, run_dir.sub("logs") / f"{s.name}.out") for s in specs]
        self.failed: str | None = None  # why the run cannot go on, if it cannot

    def command(self, spec: ProcessSpec) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ba3c.cli",
            spec.role,
            "--run-dir",
            str(self.run_dir.path),
            "--index",
            str(spec.index),
        ]

    def _spawn(self, child: Child) -> None:
        child.out_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(child.out_path, "ab") as out:
            child.popen = subprocess.Popen(
                self.command(child.spec),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        child.started_at = time.monotonic()
        log.info("started", process=child.name, pid=child.popen.pid)

    def start(self) -> None:
        """Starts every process, paramservers first (the others wait for their addresses)."""
        for role in ROLES:
            for child in self.children:
                if child.spec.role == role:
                    # a stale address from a previous session would send clients astray
                    self.run_dir.remove_address(role, child.spec.index)
                    self._spawn(child)

    def poll(self) -> None:
        """Reports children that died and restarts them while their budget lasts."""
        for child in self.children:
            if child.popen is None or child.alive():
                continue
            code = child.popen.returncode
            child.exit_codes.append(code)
            child.popen = None
            self.report(
                f"{child.name} exited with code {code}; last lines of {child.out_path}:\n"
                + _indent(tail(child.out_path))
            )
            if child.restarts >= child.spec.max_restarts:
                self.failed = (
                    f"{child.name} died {child.restarts + 1} times; giving up "
                    f"(see {child.out_path})"
                )
                return
            child.restarts += 1
            self.report(f"restarting {child.name} ({child.restarts}/{child.spec.max_restarts})")
            self._spawn(child)

    def stop(self, grace: float = 30.0) -> None:
        """Stops children in reverse start order, each role's processes together."""
        for role in reversed(ROLES):
            group = [c for c in self.children if c.spec.role == role and c.alive()]
            for child in group:
                _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in group:
                try:
                    child.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.report(f"{child.name} did not stop within {grace:.0f}s; killing it")
                    _signal_group(child, signal.SIGKILL)
                    child.popen.wait(10)

    def pids(self) -> list[int]:
        return [c.popen.pid for c in self.children if c.popen is not None]


def _signal_group(child: Child, sig: int) -> None:
    try:
        os.killpg(child.popen.pid, sig)
    except ProcessLookupError:
        pass


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
