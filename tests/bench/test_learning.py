"""bench/learning.py --from-run: the curve it records from a run's eval.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT, make_run_dir

LEARNING = [sys.executable, "-m", "bench.learning"]


def learning(*args: str) -> subprocess.CompletedProcess:
    """`python -m bench.learning ARGS` from the checkout, output captured."""
    return subprocess.run([*LEARNING, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


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
        for v, f, m, minutes in ((10, 4000, -21.0, 1), (500, 12_000_000, -5.0, 30))
    ]
    # the last line is still being written: it must be skipped, not fail the reader
    run_dir.eval_path.write_text("\n".join(lines) + '\n{"version": 9')
    out, png = tmp_path / "learning.json", tmp_path / "curve.png"
    done = learning("--from-run", str(run_dir.path), "--out", str(out), "--plot", str(png))
    assert done.returncode == 0, done.stderr
    assert "| 30.0 | 12,000,000 | 500 | -5.0 [-6--4] | 3 |" in done.stdout
    # beside the published curve at the same frames (RLlib's IMPALA: -15.3 at 12M frames)
    assert "12.0M frames: -5.0 here, -15.3 for RLlib IMPALA" in done.stdout
    report = json.loads(out.read_text())
    assert [(p["minutes"], p["env_frames"], p["mean"]) for p in report["curve"]] == [
        (1.0, 4000, -21.0),
        (30.0, 12_000_000, -5.0),
    ]
    # Pong's target (issue 18): above 0 within 90 minutes; this run never got there
    assert "target: above 0 within 90 minutes: MISSED, best -5" in done.stdout
    assert report["target"] == {"describe": "above 0 within 90 minutes", "met": False}
    assert report["references_at_final_frames"] == {
        "RLlib IMPALA, 32 workers (rl-experiments)": -15.3
    }
    assert report["best_mean"] == -5.0 and report["final_mean"] == -5.0
    assert report["machine_before"]["cores"] >= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in done.stdout


def test_learning_needs_minutes_or_a_run(tmp_path):
    done = learning("--out", str(tmp_path / "x.json"))
    assert done.returncode == 2
    assert "--minutes must be > 0" in done.stderr and "Traceback" not in done.stderr
    done = learning("--from-run", str(tmp_path))
    assert done.returncode == 2
    assert "is not a run directory (no config.toml)" in done.stderr


def test_a_reference_curve_is_read_between_its_points_and_not_past_its_ends():
    from bench.learning import REFERENCES, reference_at

    ((label, score),) = reference_at("BreakoutNoFrameskip-v4", 5e6)  # between 4M and 6M
    assert label.startswith("RLlib A2C") and score == pytest.approx((23.3 + 46.2) / 2)
    assert reference_at("BreakoutNoFrameskip-v4", 0.5e6) == []  # before its first point
    assert reference_at("PongNoFrameskip-v4", 30e6) == []  # past its last
    assert reference_at("CartPole-v1", 1e6) == []
    for refs in REFERENCES.values():
        for _, points, spread in refs:
            frames = [f for f, _ in points]
            assert frames == sorted(set(frames)), "a curve's frames must increase"
            assert (spread is None) == (len(points) > 1)


def test_a_target_is_met_only_by_an_evaluation_past_it_within_its_minutes():
    from bench.learning import TARGETS, Target, target_verdict

    def run(*means_at):
        return [{"minutes": m, "env_frames": int(m * 1e5), "mean": v} for m, v in means_at]

    pong, breakout = TARGETS["PongNoFrameskip-v4"], TARGETS["BreakoutNoFrameskip-v4"]
    assert target_verdict(run((10, -21.0), (70, 0.0)), pong) == (
        False,
        "target: above 0 within 90 minutes: MISSED, best 0",  # 0 is not above 0
    )
    assert target_verdict(run((10, -21.0), (78, 0.6), (89, 3.2)), pong) == (
        True,
        "target: above 0 within 90 minutes: met, first at 78.0 min, 7.80M frames (0.6)",
    )
    met, line = target_verdict(run((30, 49.8), (55, 50.0)), breakout)  # 50 or more
    assert met and "first at 55.0 min" in line
    met, line = target_verdict(run((30, 12.0), (61, 80.0)), breakout)  # too late
    assert not met and line.endswith("MISSED, first at 61.0 min, 6.10M frames (80)")
    assert Target(1.0, strict=False, minutes=1).describe() == "at least 1 within 1 minutes"


def _run_with_curve(path, env, started, means_at):
    run_dir = make_run_dir(path, env=env)
    os.utime(run_dir.config_path, (started, started))
    run_dir.eval_path.write_text(
        "".join(
            json.dumps(
                {
                    "version": 100 * i,
                    "env_frames": int(minutes * 2e5),
                    "mean": mean,
                    "min": mean - 1,
                    "max": mean + 1,
                    "episodes": 5,
                    "time": started + 60 * minutes,
                }
            )
            + "\n"
            for i, (minutes, mean) in enumerate(means_at)
        )
    )
    return run_dir


def test_other_runs_of_the_game_are_judged_and_drawn_beside_it(tmp_path):
    first = _run_with_curve(tmp_path / "first", "PongNoFrameskip-v4", 1e6, [(10, -20), (80, 1)])
    second = _run_with_curve(tmp_path / "second", "PongNoFrameskip-v4", 2e6, [(70, -3), (95, 2)])
    out, png = tmp_path / "learning.json", tmp_path / "both.png"
    done = learning(
        "--from-run",
        str(first.path),
        "--also-run",
        str(second.path),
        "--out",
        str(out),
        "--plot",
        str(png),
    )
    assert done.returncode == 0, done.stderr
    assert "target: above 0 within 90 minutes: met, first at 80.0 min" in done.stdout
    # the second run got above 0 only at 95 minutes, each run timed from its own start
    assert "second: target: above 0 within 90 minutes: MISSED, first at 95.0 min" in done.stdout
    (also,) = json.loads(out.read_text())["also"]
    assert also["target_met"] is False and [p["mean"] for p in also["curve"]] == [-3, 2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    breakout = _run_with_curve(tmp_path / "breakout", "BreakoutNoFrameskip-v4", 1e6, [(5, 9)])
    done = learning(
        "--from-run",
        str(first.path),
        "--also-run",
        str(breakout.path),
        "--out",
        str(tmp_path / "no.json"),
    )
    assert done.returncode == 2 and not (tmp_path / "no.json").exists()
    assert f"--also-run: {breakout.path} ran BreakoutNoFrameskip-v4, not PongNoFrameskip-v4" in (
        done.stderr
    )
