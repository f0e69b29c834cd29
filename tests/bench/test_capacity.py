"""bench/capacity.py in its tiniest mode, so that the benchmark cannot rot unnoticed.

Real processes: one `ba3c paramserver` per (mode, N) and synthetic learner processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

CAPACITY = [sys.executable, "-m", "bench.capacity"]


def test_capacity_measures_async_and_sync_pushes_of_two_learners(tmp_path):
    out = tmp_path / "capacity.json"
    done = subprocess.run(
        [
            *CAPACITY,
            "--model",
            "tiny",
            "--learners",
            "2",
            "--modes",
            "async",
            "sync",
            "--seconds",
            "0.5",
            "--repeats",
            "1",
            "--warmup",
            "0.2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| mode | N | applied pushes/s |" in done.stdout
    report = json.loads(out.read_text())
    assert report["machine_before"]["cores"] >= 1
    assert len(report["machine_before"]["load_average"]) == 3
    rows = {row["mode"]: row for row in report["rows"]}
    assert set(rows) == {"async", "sync"}
    for mode, pushes_per_version in (("async", 1.0), ("sync", 2.0)):
        row = rows[mode]
        assert row["learners"] == 2
        assert row["errors"] == 0 and row["dropped"] == 0, row
        assert row["calls"] > 0
        assert row["applied_per_s"]["median"] > 0
        # async applies every push as its own version; sync averages both learners' pushes
        assert row["pushes_per_version"]["median"] == pushes_per_version, row
        assert 0 < row["p50_ms"]["median"] <= row["p99_ms"]["median"]
        assert row["shard_cpu_ms_per_push"]["median"] > 0


def test_capacity_refuses_a_learner_count_of_zero(tmp_path):
    done = subprocess.run(
        [*CAPACITY, "--learners", "0", "--out", str(tmp_path / "x.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--learners: must be > 0, got 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.json").exists()
