"""Score statistics and the eval.jsonl record."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ba3c.rundir import RunDir
from services.evaluator import metrics
from services.evaluator.stats import Episode, EvalResult, ScoreStats


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_statistics_match_numpy(scores):
    s = ScoreStats.of(scores)
    assert s.mean == pytest.approx(np.mean(scores), rel=1e-9, abs=1e-6)
    assert s.std == pytest.approx(np.std(scores), rel=1e-6, abs=1e-6)
    assert (s.max, s.min) == (max(scores), min(scores))


def test_no_scores_is_an_error():
    with pytest.raises(ValueError, match="at least one episode"):
        ScoreStats.of([])


def test_the_jsonl_record_has_the_fields_the_launcher_reads(tmp_path):
    result = EvalResult(
        version=42,
        env_frames=1000,
        episodes=(Episode(3.0, 10), Episode(5.0, 30, finished=False)),
        seconds=1.25,
        greedy=True,
        versions=(42, 43),
    )
    run_dir = RunDir(tmp_path)
    metrics.publish(result, run_dir)
    metrics.publish(result, run_dir)
    lines = run_dir.eval_path.read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert {
        k: record[k] for k in ("version", "env_frames", "mean", "max", "min", "episodes", "seconds")
    } == {
        "version": 42,
        "env_frames": 1000,
        "mean": 4.0,
        "max": 5.0,
        "min": 3.0,
        "episodes": 2,
        "seconds": 1.25,
    }
    assert math.isclose(record["std"], 1.0)
    assert record["cut"] == 1 and record["mean_length"] == 20
    assert isinstance(record["time"], float)
    assert run_dir.evaluations() == [record, record]
    assert run_dir.last_evaluation() == record


def test_a_half_written_line_is_skipped_by_readers(tmp_path):
    run_dir = RunDir(tmp_path)
    assert run_dir.evaluations() == [] and run_dir.last_evaluation() is None
    run_dir.eval_path.write_text('{"version": 1, "mean": 2.0}\n[3]\n{"version": 2, "me')
    assert run_dir.evaluations() == [{"version": 1, "mean": 2.0}]
    assert run_dir.last_evaluation() == {"version": 1, "mean": 2.0}


def test_eval_both_reports_the_other_policy_under_its_name():
    sampled = (Episode(2.0, 10), Episode(4.0, 12))
    greedy = (Episode(6.0, 20), Episode(8.0, 22))
    record = EvalResult(1, 100, sampled, 1.0, greedy=False, other=greedy).record()
    assert record["mean"] == 3.0 and record["greedy"] is False
    assert record["other_policy"]["greedy"] is True and record["other_policy"]["mean"] == 7.0
    assert record["other_policy"]["scores"] == [6.0, 8.0]
    flipped = EvalResult(1, 100, greedy, 1.0, greedy=True, other=sampled).record()
    assert flipped["other_policy"] == {**flipped["other_policy"], "greedy": False, "mean": 3.0}
    assert "other_policy" not in EvalResult(1, 100, sampled, 1.0, greedy=False).record()
