"""Fixtures shared by all tests: run directories and real child processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Process, ba3c_command, make_run_dir


@pytest.fixture
def run_dir_factory(tmp_path):
    """make(**knobs) -> RunDir with config.toml and secret under tmp_path."""
    counter = iter(range(1_000_000))

    def make(**overrides):
        return make_run_dir(tmp_path / f"run{next(counter)}", **overrides)

    return make


@pytest.fixture
def processes(tmp_path) -> Iterator:
    """start(name, *ba3c_args) -> Process; every process is stopped at teardown and its
    output is printed if the test failed."""
    started: list[Process] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None, raw: bool = False):
        cmd = list(args) if raw else ba3c_command(*args)
        p = Process(cmd, tmp_path / "proc-logs" / f"{name}.out", env=env)
        started.append(p)
        return p

    yield start
    for p in started:
        code = p.stop()
        print(f"----- {p.log_path.name} (exit {code}) -----\n{p.output()[-4000:]}")
