"""bench/stacker.py in its tiniest mode, so that the benchmark cannot rot unnoticed, and its
baseline (the slice copy the stacker replaced) checked against the stacker itself."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from bench.stacker import SHAPE, K, SliceCopyStacker
from services.learner.stacker import FrameStacker
from tests.support import ROOT


def test_the_baseline_stacks_exactly_as_the_stacker_does():
    rng = np.random.default_rng(1)
    now, before = FrameStacker(2, SHAPE, K), SliceCopyStacker(2, SHAPE, K)
    for step in range(6):
        frames = rng.integers(0, 256, (2, *SHAPE[:-1], 1), np.uint8)
        reset = [step % 2] if step == 3 else []
        np.testing.assert_array_equal(now.next(frames, reset), before.next(frames, reset))


def test_the_benchmark_times_both_and_writes_its_report(tmp_path):
    out = tmp_path / "stacker.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.stacker", "--envs", "2", "--calls", "3", "--repeats", "1"]
        + ["--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "stacking [2, 84, 84, 4] uint8: now " in done.stdout
    report = json.loads(out.read_text())
    assert report["envs"] == 2 and report["now_us"]["median"] > 0
    assert report["ratio"] == report["now_us"]["median"] / report["slice_copy_us"]["median"]
