"""Helpers for tests that run real processes: start them, wait on them, clean them up.

Nothing here sleeps to synchronise: `wait_for` polls a condition until a deadline and fails
with a message that says what did not happen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ba3c import config as configuration
from ba3c.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent.parent
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Polls `condition` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as e:  # noqa: BLE001 - the condition may not be ready yet
            last_error, value = e, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}"
        + (f" (last error: {last_error!r})" if last_error else "")
    )


def make_run_dir(path: Path, **overrides: Any) -> RunDir:
    """A run directory with config.toml (defaults + `overrides` by knob name) and a secret."""
    cfg = configuration.Config()
    by_name = {k.name: k for k in configuration.knobs()}
    for name, value in overrides.items():
        k = by_name[name]
        setattr(getattr(cfg, k.section), name, value)
    cfg.validate()
    run_dir = RunDir(path)
    run_dir.create(cfg)
    return run_dir


class Process:
    """A child process in its own process group, with output in a file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.args = list(args)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.popen = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)


def ba3c_command(*args: str) -> list[str]:
    """`ba3c ARGS` run with this interpreter (works installed or from the checkout)."""
    return [sys.executable, "-m", "ba3c.cli", *args]
