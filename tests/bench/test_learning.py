"""bench/learning.py --from-run: the curve it records from a run's eval.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import ROOT, make_run_dir

LEARNING = [sys.executable, "-m", "bench.learning"]


def test_learning_curve_is_read_from_eval_jsonl(tmp_path):
    run_dir = make_run_dir(tmp_path / "run", env="PongNoFrameskip-v4")
    started = 1_000_000.0
    os.utime(run_dir.config_path, (started, started))
    lines = [
        json.dumps(
            {
                "version": v,
                "env_frames": f,
                "mean": m,
                "min": m - 1,
                "max": m + 1,
                "episodes": 3,
                "time": started + 60 * minutes,
            }
        )
        for v, f, m, minutes in ((10, 4000, -21.0, 1), (500, 200_000, -5.0, 30))
    ]
    # the last line is still being written: it must be skipped, not fail the reader
    run_dir.eval_path.write_text("\n".join(lines) + '\n{"version": 9')
    out, png = tmp_path / "learning.json", tmp_path / "curve.png"
    done = subprocess.run(
        [*LEARNING, "--from-run", str(run_dir.path), "--out", str(out), "--plot", str(png)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "| 30.0 | 200,000 | 500 | -5.0 [-6--4] | 3 |" in done.stdout
    report = json.loads(out.read_text())
    assert [(p["minutes"], p["env_frames"], p["mean"]) for p in report["curve"]] == [
        (1.0, 4000, -21.0),
        (30.0, 200_000, -5.0),
    ]
    assert report["best_mean"] == -5.0 and report["final_mean"] == -5.0
    assert report["machine_before"]["cores"] >= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in done.stdout


def test_learning_needs_minutes_or_a_run(tmp_path):
    done = subprocess.run(
        [*LEARNING, "--out", str(tmp_path / "x.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--minutes must be > 0" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        [*LEARNING, "--from-run", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "is not a run directory (no config.toml)" in done.stderr
