"""The TensorBoard event files are read back with TensorBoard's own reader."""

import pytest

from services.evaluator.stats import Episode, EvalResult
from tests.evaluator.cluster import read_scalars


def test_scalars_of_each_evaluation_are_written_at_its_version(tmp_path):
    from services.evaluator.tboard import TAGS, EvalSummaries

    summaries = EvalSummaries(tmp_path / "eval")
    summaries.write(EvalResult(3, 100, (Episode(1.0, 10), Episode(3.0, 20)), 1.0, False))
    summaries.write(EvalResult(9, 900, (Episode(7.0, 40),), 1.0, False))
    summaries.close()
    scalars = read_scalars(tmp_path / "eval")
    assert set(TAGS) <= set(scalars)
    assert scalars["eval/score_mean"] == [(3, 2.0), (9, 7.0)]
    assert scalars["eval/score_max"] == [(3, 3.0), (9, 7.0)]
    assert scalars["eval/score_min"] == [(3, 1.0), (9, 7.0)]
    assert scalars["eval/episode_length"] == [(3, 15.0), (9, 40.0)]
    assert scalars["eval/score_std"][0] == (3, pytest.approx(1.0))
