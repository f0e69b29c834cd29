"""Fixtures for monitoring tests: one real Prometheus per session, from the repository's
configuration and rules, watching the targets of `prometheus.run_path` (the live run)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ba3c.tools import monitor
from tests.monitoring.prom import PrometheusAPI

SCRAPE_INTERVAL = "1s"


@dataclass
class MonitoredPrometheus:
    server: monitor.LocalPrometheus
    api: PrometheusAPI
    run_path: Path  # the run directory it watches; may not hold a run yet

    @property
    def url(self) -> str:
        return self.server.url


def require(binary: str) -> str:
    found = shutil.which(binary)
    if not found:
        pytest.fail(
            f"{binary} is not installed; run `make system-deps` (Debian's prometheus package)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return require("promtool")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory) -> Iterator[MonitoredPrometheus]:
    require("prometheus")
    base = tmp_path_factory.mktemp("prometheus")
    run_path = base / "live-run"
    (run_path / "targets").mkdir(parents=True)  # watched from the start
    config = monitor.config_for_runs([run_path], scrape_interval=SCRAPE_INTERVAL)
    server = monitor.LocalPrometheus(config, base / "state")
    server.start()
    try:
        server.wait_ready(timeout=30)
        yield MonitoredPrometheus(server, PrometheusAPI(server.url), run_path)
    finally:
        server.stop()
        print(f"----- prometheus.log -----\n{server.log_tail(30)}")
