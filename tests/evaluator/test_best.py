"""The best parameters by evaluation score, kept apart (in-process: files only)."""

import numpy as np

from ba3c import checkpoint, sharding
from services.evaluator.best import BestKeeper
from services.evaluator.stats import Episode, EvalResult


def result(version: int, *scores: float) -> EvalResult:
    episodes = tuple(Episode(score=s, length=10, finished=True) for s in scores)
    return EvalResult(
        version=version, env_frames=version * 100, episodes=episodes, seconds=1.0, greedy=False
    )


def weights(value: float) -> dict[str, np.ndarray]:
    return {"fc/kernel": np.full((3, 2), value, np.float32), "fc/bias": np.zeros(2, np.float32)}


def test_only_a_better_evaluation_replaces_the_best_and_it_survives_a_restart(tmp_path):
    keeper = BestKeeper(tmp_path)
    assert keeper.offer(result(10, 1.0, 3.0), weights(1.0))
    assert not keeper.offer(result(20, 1.0, 1.0), weights(2.0))  # mean 1 < 2
    assert keeper.offer(result(5, 4.0), weights(3.0))  # better, though an older version
    files = checkpoint.list_files(tmp_path / "best")
    assert len(files) == 1
    again = BestKeeper(tmp_path)
    assert again.best == 4.0 and not again.offer(result(30, 3.9), weights(4.0))
    pieces, version, frames = checkpoint.load_run_parameters(tmp_path / "best")
    assert (version, frames) == (5, 500)
    np.testing.assert_array_equal(
        sharding.join_by_names(pieces)["fc/kernel"], weights(3.0)["fc/kernel"]
    )
    # the shards' folders are all a run's checkpoints hold for them: best is not a shard
    assert checkpoint.shard_directories(tmp_path) == {}
