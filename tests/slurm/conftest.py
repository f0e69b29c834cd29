"""The `slurm` fixture: one real Slurm cluster (munged, slurmctld, node1..node4) per session.

It fails (never skips) where it cannot run: CI is root on Debian, so a missing piece there
is a bug to see, not a test to hide.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.slurm import cluster as slurm_cluster


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Iterator[slurm_cluster.Cluster]:
    try:
        running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.ClusterError as e:
        pytest.fail(f"cannot start a Slurm cluster: {e}", pytrace=False)
    try:
        yield running
    finally:
        running.stop()
