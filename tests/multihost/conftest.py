"""The `hosts` fixture: four network-namespace hosts with Slurm, built once per session.

It fails (never skips) where it cannot run: CI is root on Debian with iproute2, so a missing
piece there is a bug to see, not a test to hide.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.multihost import cluster


@pytest.fixture(scope="session")
def hosts(tmp_path_factory) -> Iterator[cluster.MultiHostCluster]:
    try:
        running = cluster.start(tmp_path_factory.mktemp("multihost"))
    except cluster.ClusterError as e:
        pytest.fail(f"cannot build the namespace hosts: {e}", pytrace=False)
    try:
        yield running
    finally:
        running.stop()
