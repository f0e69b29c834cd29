"""`ba3c train` end to end: real processes, real learning, clean stops, resumes, restarts."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ba3c.rundir import RunDir
from tests.support import ROOT, Process, ba3c_command, wait_for

# CartPole learns in a couple of minutes with these (measured; see the launcher issue note).
CARTPOLE = [
    "-e",
    "CartPole-v1",
    "--model",
    "mlp",
    "--optimizer",
    "adam",
    "--lr",
    "0.001",
    "--beta1",
    "0.9",
    "--beta2",
    "0.999",
    "--epsilon",
    "1e-8",
    "--grad_clip",
    "40",
    "--batch_size",
    "64",
    "--simulator_procs",
    "16",
    "--eval_every",
    "5",
    "--eval_episodes",
    "10",
    "--save_every",
    "50",
    "--plain",
    "--progress-every",
    "5",
]


def processes_of(run_dir: Path) -> list[int]:
    """PIDs of live processes whose command line names the run directory."""
    needle = str(run_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def evaluations(run_dir: Path) -> list[dict]:
    return RunDir(run_dir).evaluations()


def run_train(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ba3c_command("train", *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def checkpoint_version(run_dir: Path) -> int:
    from ba3c import checkpoint

    _, version, _ = checkpoint.load_run_parameters(run_dir)
    return version


def test_cartpole_learns_to_195_then_resumes_from_the_saved_version(tmp_path):
    run_dir = tmp_path / "cartpole"
    done = run_train(
        [
            "--run-dir",
            str(run_dir),
            "--ps",
            "1",
            "--use_sync",
            "--learners",
            "1",
            "--pools",
            "2",
            "--stop-score",
            "195",
            "--minutes",
            "5",
            *CARTPOLE,
        ],
        timeout=420,
    )
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stderr
    scores = [e["mean"] for e in evaluations(run_dir)]
    assert scores and max(scores) >= 195, scores
    assert "stopping: evaluation score" in done.stdout
    assert f"resume with:   ba3c train --resume {run_dir}" in done.stdout
    assert processes_of(run_dir) == []
    saved = checkpoint_version(run_dir)
    assert saved > 0

    resumed = run_train(["--resume", str(run_dir), "--minutes", "0.5", "--plain"], timeout=180)
    print(resumed.stdout[-3000:], resumed.stderr[-3000:])
    assert resumed.returncode == 0, resumed.stderr
    assert "(resumed)" in resumed.stdout
    assert checkpoint_version(run_dir) > saved  # went on from the saved version, not from 0
    assert processes_of(run_dir) == []


def test_breakout_smoke_two_shards_with_recording(tmp_path):
    """Breakout trains on two shards and records a video; stopped as soon as both shards
    have saved a version and the video is written (a fixed --minutes made this the slowest
    test in the suite; the timed end is checked by the CartPole resume above)."""
    from ba3c import checkpoint

    run_dir = tmp_path / "breakout"
    proc = Process(
        ba3c_command(
            "train",
            "--run-dir",
            str(run_dir),
            "-e",
            "ALE/Breakout-v5",
            "--ps",
            "2",
            "--learners",
            "1",
            "--pools",
            "2",
            "--simulator_procs",
            "8",
            "--batch_size",
            "32",
            "--record_node",
            "--eval_every",
            "10",
            "--eval_episodes",
            "1",
            "--eval_max_steps",
            "300",
            "--save_every",
            "20",
            "--minutes",
            "6",
            "--plain",
        ),
        tmp_path / "train.out",
    )

    def saved(shard: int) -> int:
        newest = checkpoint.newest(RunDir(run_dir).checkpoints(shard))
        return newest.version if newest is not None else 0

    try:
        wait_for(
            lambda: list((run_dir / "videos").glob("*.mp4")) and saved(0) > 0 and saved(1) > 0,
            300,
            "a recorded video and a saved version on both shards",
            interval=0.5,
        )
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.popen.wait(90) == 130, proc.output()[-3000:]
    finally:
        proc.stop()
    losses = [
        json.loads(line).get("loss")
        for line in (run_dir / "logs" / "learner-0.log").read_text().splitlines()
        if '"loss"' in line
    ]
    assert losses and all(math.isfinite(x) for x in losses if x is not None)
    assert processes_of(run_dir) == []


def test_sigterm_stops_everything_and_says_where_the_run_is(tmp_path):
    run_dir = tmp_path / "stopped"
    out = tmp_path / "train.out"
    proc = Process(
        ba3c_command("train", "--run-dir", str(run_dir), "--minutes", "10", *CARTPOLE), out
    )
    try:
        wait_for(
            lambda: (
                RunDir(run_dir).addresses("simulator")
                or (run_dir / "logs" / "simulator-0.log").exists()
            ),
            120,
            "the pools to start",
        )
        wait_for(
            lambda: (
                "parameter version " in proc.output()
                and "parameter version 0 " not in proc.output().splitlines()[-1]
            ),
            120,
            "training to advance",
        )
        children = processes_of(run_dir)
        assert len(children) >= 5  # launcher + paramserver, learner, pool(s), evaluator
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.popen.wait(90) == 130
    finally:
        proc.stop()
    text = proc.output()
    assert "stopping: SIGTERM received" in text
    assert f"run directory: {run_dir}" in text
    assert processes_of(run_dir) == []
    assert list((run_dir / "checkpoints").rglob("*")), "no final checkpoint"


def test_a_killed_pool_is_reported_and_restarted(tmp_path):
    run_dir = tmp_path / "restart"
    out = tmp_path / "train.out"
    proc = Process(
        ba3c_command(
            "train", "--run-dir", str(run_dir), "--minutes", "10", "--pools", "1", *CARTPOLE
        ),
        out,
    )
    try:
        pool_pid = wait_for(lambda: _pid_of(run_dir, "simulator"), 120, "the pool")
        wait_for(lambda: (run_dir / "logs" / "simulator-0.log").exists(), 60, "pool log")
        os.kill(pool_pid, signal.SIGKILL)
        wait_for(
            lambda: "simulator-0 exited with code -9" in proc.output(),
            30,
            "the death to be reported",
        )
        wait_for(lambda: "restarting simulator-0 (1/5)" in proc.output(), 30, "a restart")
        wait_for(
            lambda: (_pid_of(run_dir, "simulator") or pool_pid) != pool_pid,
            30,
            "a new pool process",
        )
    finally:
        proc.stop(60)
    assert processes_of(run_dir) == []


def _pid_of(run_dir: Path, role: str) -> int | None:
    for pid in processes_of(run_dir):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if role.encode() in cmd:
            return pid
    return None


@pytest.mark.parametrize(
    "args, words",
    [
        (["--resume", "/nonexistent/run"], "is not a run directory"),
        (["--lr", "fast"], "flag --lr: lr expects float"),
        (["--resume", "/tmp", "--lr", "0.1"], "edit it instead of passing --lr"),
    ],
)
def test_bad_usage_is_one_line_and_starts_nothing(args, words, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ba3c.cli", "train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()
