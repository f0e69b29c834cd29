"""The learner's frame stacker (newest-frame pools), in-process: per environment, reset
when an episode ends, and identical to the stacks a full-observation pool sends."""

from __future__ import annotations

import numpy as np
import pytest

from ba3c import envs
from ba3c.config import Config
from services.learner.stacker import FrameStacker


def frame(n: int, value: int) -> np.ndarray:
    return np.full((n, 2, 3, 1), value, np.uint8)


def test_stacks_oldest_first_and_starts_with_zeros():
    s = FrameStacker(2, (2, 3, 3), 3)
    first = s.first(frame(2, 1))
    assert first.shape == (2, 2, 3, 3)
    assert first[0, 0, 0].tolist() == [0, 0, 1]
    second = s.next(frame(2, 2))
    third = s.next(frame(2, 3))
    fourth = s.next(frame(2, 4))
    assert second[1, 1, 2].tolist() == [0, 1, 2]
    assert third[1, 1, 2].tolist() == [1, 2, 3]
    assert fourth[0, 0, 0].tolist() == [2, 3, 4]
    assert first[0, 0, 0].tolist() == [0, 0, 1]  # handed-out arrays are never changed


def test_a_reset_restarts_only_that_environments_stack():
    s = FrameStacker(3, (2, 3, 2), 2)
    s.first(frame(3, 1))
    out = s.next(frame(3, 2), reset=[1])
    assert out[0, 0, 0].tolist() == [1, 2]
    assert out[1, 0, 0].tolist() == [0, 2]
    assert out[2, 0, 0].tolist() == [1, 2]
    out = s.next(frame(3, 3))
    assert out[1, 0, 0].tolist() == [2, 3]


def test_rgb_frames_keep_their_channels_together():
    s = FrameStacker(1, (1, 1, 6), 2)
    s.first(np.array([[[[1, 2, 3]]]], np.uint8))
    out = s.next(np.array([[[[4, 5, 6]]]], np.uint8))
    assert out.reshape(-1).tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "shape,k", [((5, 7, 4), 4), ((5, 7, 4), 2), ((5, 7, 6), 2), ((5, 7, 9), 3)]
)
def test_stacks_match_frame_by_frame_bookkeeping_through_random_resets(shape, k):
    """Against a plain per-environment list of the last k frames."""
    rng = np.random.default_rng(0)
    n, c = 3, shape[-1] // k
    stacker = FrameStacker(n, shape, k)
    history = [[np.zeros((*shape[:-1], c), np.uint8)] * k for _ in range(n)]
    for step in range(3 * k):
        frames = rng.integers(0, 256, (n, *shape[:-1], c), np.uint8)
        reset = [int(i) for i in rng.choice(n, size=int(rng.integers(0, 2)), replace=False)]
        out = stacker.first(frames) if step == 0 else stacker.next(frames, reset)
        for i in range(n):
            older = [np.zeros_like(frames[i])] * (k - 1) if i in reset else history[i][1:]
            history[i] = [*older, frames[i]]
            np.testing.assert_array_equal(out[i], np.concatenate(history[i], axis=-1))


@pytest.mark.parametrize("shape,k", [((4,), 2), ((84, 84, 4), 3), ((84, 84, 4), 1)])
def test_refuses_what_cannot_be_stacked(shape, k):
    with pytest.raises(ValueError, match="cannot stack"):
        FrameStacker(1, shape, k)


def test_newest_frame_pool_plus_stacker_equals_the_full_pool():
    """Real ALE, same seeds and actions: the learner's stacks are the pool's own, through
    lost lives (episodic life keeps the stack) and game resets (truncation at 40 steps)."""
    cfg = Config()
    cfg.run.env = "ALE/Breakout-v5"
    cfg.env.max_episode_steps = 40
    rng = np.random.default_rng(3)
    with (
        envs.make_pool(cfg, 3, seed=7) as full,
        envs.make_pool(cfg, 3, seed=7, newest_frame=True) as newest,
    ):
        assert newest.frame_stack == 4 and full.frame_stack == 0
        stacker = FrameStacker(3, (84, 84, 4), 4)
        want = full.reset()
        frames = newest.reset()
        assert frames.shape == (3, 84, 84, 1)
        np.testing.assert_array_equal(stacker.first(frames), want)
        resets = 0
        for _ in range(100):
            actions = rng.integers(0, 4, 3, dtype=np.int32)
            a, b = full.step(actions), newest.step(actions)
            reset = [f.env_index for f in b.finished]
            resets += len(reset)
            np.testing.assert_array_equal(stacker.next(b.observations, reset), a.observations)
            np.testing.assert_array_equal(a.dones, b.dones)
        assert resets >= 3  # every env was truncated at least once


def test_vector_pools_ignore_newest_frame():
    cfg = Config()
    cfg.run.env = "CartPole-v1"
    with envs.make_pool(cfg, 2, seed=0, newest_frame=True) as pool:
        assert pool.frame_stack == 0
        assert pool.reset().shape == (2, 4)
