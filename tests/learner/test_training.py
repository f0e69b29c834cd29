"""Whole training with real processes: 1 paramserver + 1 learner + 1 simulator pool."""

from __future__ import annotations

import math
import time

import pytest

from tests.learner.cluster import CARTPOLE, metric, shard_status
from tests.support import wait_for
from tests.support.metrics import scrape


def start_cluster(processes, run_dir):
    for role in ("paramserver", "learner", "simulator"):
        processes(role, role, "--run-dir", str(run_dir.path))


@pytest.mark.slow
@pytest.mark.parametrize("params_dtype", ["float32", "bfloat16"])
def test_cartpole_learns_to_balance_within_five_minutes(run_dir_factory, processes, params_dtype):
    """Also with the parameters sent back as bfloat16 (the shard keeps float32)."""
    run_dir = run_dir_factory(**CARTPOLE, params_dtype=params_dtype)
    start = time.monotonic()
    start_cluster(processes, run_dir)
    first = wait_for(
        lambda: (
            metric(run_dir, "ba3c_learner_online_episodes_total") >= 20
            and metric(run_dir, "ba3c_learner_online_return_mean")
        ),
        120,
        "the first 20 episodes",
    )
    assert first < 60, f"an untrained policy should score about 20, got {first}"
    reached = wait_for(
        lambda: (m := metric(run_dir, "ba3c_learner_online_return_mean")) >= 195 and m,
        300 - (time.monotonic() - start),
        "a mean online return of 195 over 20 episodes",
        interval=0.5,
    )
    elapsed = time.monotonic() - start
    pushpull = scrape(run_dir, "learner")
    ratio = pushpull.value("ba3c_learner_pushpull_bytes_total", direction="received") / (
        pushpull.value("ba3c_learner_pushpull_bytes_total", direction="sent")
    )
    # replies carry as many parameters as requests carry gradients (float32): half the
    # bytes in bfloat16
    assert (0.45 < ratio < 0.6) if params_dtype == "bfloat16" else (0.9 < ratio < 1.1), ratio
    print(
        f"CartPole, {params_dtype} parameters: mean return {reached:.1f} after {elapsed:.0f}s "
        f"({metric(run_dir, 'ba3c_learner_agent_steps_total'):.0f} agent steps)"
    )
    values = scrape(run_dir, "learner")
    lagged = values.value("ba3c_learner_policy_lag_versions_count")
    trained = values.value("ba3c_learner_samples_trained_total")
    # one lag per transition, recorded before its gradient is computed: up to three batches
    # (computing, queued, being pushed) ahead of the trained count
    assert trained <= lagged <= trained + 4 * CARTPOLE["batch_size"], (lagged, trained)
    assert values.value("ba3c_learner_policy_lag_seconds_count") == lagged
    mean_lag = values.value("ba3c_learner_policy_lag_versions_sum") / lagged
    assert 0 < mean_lag < 50, f"mean policy lag {mean_lag} versions"
    wait_for(
        lambda: (
            {"online/return_mean", "train/total", "train/entropy", "train/policy_lag_versions"}
            <= tensorboard_tags(run_dir.sub("tensorboard") / "learner-0")
        ),
        30,
        "the online score and losses in TensorBoard",
    )


def tensorboard_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    tags = accumulator.Tags()
    return set(tags.get("tensors", [])) | set(tags.get("scalars", []))


@pytest.mark.slow
def test_breakout_trains_with_bfloat16_gradients_and_rising_versions(run_dir_factory, processes):
    run_dir = run_dir_factory(
        env="ALE/Breakout-v5", batch_size=32, simulator_procs=8, grad_dtype="bfloat16"
    )
    start_cluster(processes, run_dir)
    wait_for(
        lambda: metric(run_dir, "ba3c_learner_train_steps_total") >= 1,
        120,
        "the first training step",
    )
    early = shard_status(run_dir).version
    wait_for(
        lambda: metric(run_dir, "ba3c_learner_agent_steps_total") >= 2000, 180, "2,000 agent steps"
    )
    wait_for(lambda: shard_status(run_dir).version > early, 60, "the shard version to rise")
    values = scrape(run_dir, "learner")
    for part in ("total", "policy", "value"):
        assert values.has("ba3c_learner_loss", part=part)
        assert math.isfinite(values.value("ba3c_learner_loss", part=part))
    assert math.isfinite(values.value("ba3c_learner_policy_entropy"))
    assert values.value("ba3c_learner_policy_entropy") > 0
    # one pool, double-buffered (two halves, two streams) and sending the newest frame
    # only (the learner stacks them): the defaults for Atari
    assert values.value("ba3c_learner_pools_connected") == 1  # two streams, one pool
    assert shard_status(run_dir).env_frames >= 4 * 1000  # frame skip 4
