"""bench/act_transport.py in its tiniest mode: every kind of server answers real streamed
and unary calls from another process, and the report holds each one's CPU per step."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.act_transport import MODES
from tests.support import ROOT


def test_each_server_kind_is_timed_and_reported(tmp_path):
    out = tmp_path / "act.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.act_transport", "--messages", "20", "--repeats", "1"]
        + ["--bytes", "1000", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["servers"]) == set(MODES) and report["request_bytes"] == 1000
    for mode, row in report["servers"].items():
        # the server process did work for the calls, the client waited for the answers
        assert row["server_us"]["median"] > 0, mode
        assert row["steps_per_s"]["median"] > 0, mode
        assert f"| {mode} | " in done.stdout


def test_a_size_below_one_is_refused_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.act_transport", "--bytes", "0", "--out", str(tmp_path / "x")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--bytes must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x").exists()
