"""`ba3c report`: PNG plots from the event files and eval.jsonl a run leaves behind.

The events are written with tf.summary, exactly as the learner (tags train/<part> by
version, online/return_mean by env frames) and the evaluator (eval/* by version) write
them; the report itself must read them without TensorFlow.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ba3c.rundir import RunDir
from ba3c.tools import report
from tests.support import ROOT

WRITE_EVENTS = textwrap.dedent("""
    import sys
    import tensorflow as tf
    root = sys.argv[1]
    for learner in (0, 1):
        writer = tf.summary.create_file_writer(f"{root}/learner-{learner}")
        with writer.as_default():
            for version in range(1, 11):
                for name in ("total", "policy", "value", "entropy", "grad_norm",
                             "grad_norm_clipped", "advantage_mean"):
                    tf.summary.scalar(f"train/{name}", version * 0.1 + learner, step=version)
                tf.summary.scalar("online/return_mean", 10.0 * version + learner,
                                  step=1000 * version)
        writer.close()
    writer = tf.summary.create_file_writer(f"{root}/eval")
    with writer.as_default():
        for version in (3, 6, 9):
            for tag, value in (("eval/score_mean", 5.0 * version),
                               ("eval/score_max", 6.0 * version),
                               ("eval/score_min", 4.0 * version), ("eval/score_std", 1.0),
                               ("eval/episode_length", 100.0),
                               ("eval/env_frames", 1000.0 * version)):
                tf.summary.scalar(tag, value, step=version)
    writer.close()
""")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run directory with learner and evaluator events and an eval.jsonl."""
    run_dir = tmp_path_factory.mktemp("reported-run")
    subprocess.run(
        [sys.executable, "-c", WRITE_EVENTS, str(run_dir / "tensorboard")],
        check=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
    )
    lines = [
        {
            "version": v,
            "env_frames": 1000 * v,
            "mean": 5.0 * v,
            "max": 6.0 * v,
            "min": 4.0 * v,
            "time": 1_700_000_000 + 10 * v,
        }
        for v in (3, 6, 9)
    ]
    RunDir(run_dir).eval_path.write_text(
        "".join(json.dumps(x) + "\n" for x in lines) + '{"version": 12, "env_fr'
    )  # a line being written
    return run_dir


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def run_report(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """`ba3c report ARGS` in a fresh interpreter that fails if TensorFlow got imported."""
    code = (
        f"import sys\n{prelude}\nfrom ba3c.tools import report\n"
        f"code = report.main({list(args)!r})\n"
        "assert 'tensorflow' not in sys.modules, 'ba3c report imported TensorFlow'\n"
        "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_report_draws_score_speed_and_losses_without_tensorflow(finished_run, tmp_path):
    out = run_report("--run-dir", str(finished_run), "--out", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    expected = {"score.png", "speed.png", "losses.png"}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == expected
    for name in expected:
        assert png_size(tmp_path / "plots" / name) == (1000, 600)
        assert str(tmp_path / "plots" / name) in out.stdout


def test_report_goes_to_the_run_directory_by_default(finished_run):
    out = run_report("--run-dir", str(finished_run))
    assert out.returncode == 0, out.stderr
    assert png_size(finished_run / "report" / "score.png") == (1000, 600)


def test_the_scalars_read_are_those_the_services_wrote(finished_run):
    data = report.load_run(finished_run)
    assert sorted(data.learners) == ["learner-0", "learner-1"]
    online = data.learners["learner-1"].get(report.ONLINE_RETURN)
    assert [(p.step, p.value) for p in online] == [(1000 * v, 10.0 * v + 1) for v in range(1, 11)]
    for tag in report.LOSS_TAGS:
        points = data.learners["learner-0"].get(tag)
        assert [p.step for p in points] == list(range(1, 11)), tag
        assert points[-1].value == pytest.approx(1.0)
    # eval.jsonl wins over the events; its unfinished last line is skipped.
    assert report.evaluation_curve(data) == [
        (3000.0, 15.0, 12.0, 18.0),
        (6000.0, 30.0, 24.0, 36.0),
        (9000.0, 45.0, 36.0, 54.0),
    ]
    data.evaluations = []
    assert report.evaluation_curve(data) == [
        (3000.0, 15.0, 12.0, 18.0),
        (6000.0, 30.0, 24.0, 36.0),
        (9000.0, 45.0, 36.0, 54.0),
    ]


def test_a_half_written_event_file_is_read_up_to_its_last_whole_record(finished_run, tmp_path):
    source = next((finished_run / "tensorboard" / "learner-0").glob("events.out.tfevents.*"))
    folder = tmp_path / "learner-0"
    folder.mkdir()
    data = source.read_bytes()
    (folder / source.name).write_bytes(data[:-7])
    whole = report.read_scalars(source.parent)
    partial = report.read_scalars(folder)
    total = sum(len(v) for v in whole.by_tag.values())
    assert sum(len(v) for v in partial.by_tag.values()) == total - 1


def test_frame_rates_are_frames_over_seconds_between_points():
    times, rates = report.frame_rates([(0.0, 0.0), (2.0, 1000.0), (4.0, 3000.0), (4.0, 3500.0)])
    assert times == [2.0, 4.0] and rates == [500.0, 1000.0]


def test_an_empty_run_says_there_is_nothing_to_plot(tmp_path):
    out = run_report("--run-dir", str(tmp_path))
    assert out.returncode == 1
    assert "nothing to plot" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "report").exists()


def test_a_missing_run_dir_is_a_usage_error(tmp_path):
    out = run_report("--run-dir", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_without_matplotlib_the_report_says_how_to_install_it(finished_run, tmp_path):
    # None in sys.modules makes `import matplotlib` fail as if it were not installed.
    out = run_report(
        "--run-dir",
        str(finished_run),
        "--out",
        str(tmp_path / "plots"),
        prelude="sys.modules['matplotlib'] = None",
    )
    assert out.returncode == 1
    assert "pip install 'ba3c[report]'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "plots").exists()
