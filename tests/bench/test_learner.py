"""bench/learner.py on CartPole in its shortest mode: the limit ratio and where the CPU goes
come from real processes (a shard, a learner, a pool), and a bad --set is one line."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.learner import cpu_rows
from bench.run_all import limit_section
from tests.support import ROOT


def bench_learner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.learner", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_short_run_reports_the_ratio_and_each_process_cpu_per_agent_step(tmp_path):
    out = tmp_path / "learner.json"
    done = bench_learner(
        *("--env", "CartPole-v1", "--seconds", "3", "--envs_per_pool", "4"),
        *("--batch_size", "32", "--set", "threads=1", "--out", str(out)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["overrides"] == {"threads": 1}
    assert report["ratio"] == report["end_to_end_steps_per_s"] / report["limit_steps_per_s"] > 0
    used = report["cpu_ms_per_agent_step"]
    assert set(used) == {"paramserver", "learner", "pool 0"}
    # every process ran during the window; the learner does more than nothing per step
    assert all(ms > 0 for ms in used.values()), used
    assert all(report["raw_cpu_ms"][part] > 0 for part in "EIT"), report["raw_cpu_ms"]
    assert "| acting and training: I + T / the learner |" in done.stdout
    _, text = limit_section(report)
    assert "Where the CPU goes" in text and "| parameters: - / the shard | - |" in text


def test_the_cpu_rows_set_the_pools_against_e_and_the_learner_against_i_plus_t():
    rows = cpu_rows(
        {"E": 0.5, "I": 0.25, "T": 0.5},
        {"paramserver": 0.1, "learner": 1.0, "pool 0": 0.3, "pool 1": 0.4},
    )
    assert rows == [
        ("environments: E / the pools", "0.500", "0.700"),
        ("acting and training: I + T / the learner", "0.750", "1.000"),
        ("parameters: - / the shard", "-", "0.100"),
        ("total", "1.250", "1.800"),
    ]


def test_an_unknown_knob_or_a_bad_value_in_set_is_one_line_and_runs_nothing(tmp_path):
    for pair, message in (
        ("no_such_knob=1", "--set 'no_such_knob=1': expected KNOB=VALUE"),
        ("threads=two", "threads expects int, got 'two'"),
        ("grad_dtype=int8", "grad_dtype must be one of float32, bfloat16, float16"),
    ):
        done = bench_learner("--set", pair, "--out", str(tmp_path / "x.json"))
        assert done.returncode == 2 and message in done.stderr, done.stderr[-500:]
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "x.json").exists()
