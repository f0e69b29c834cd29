"""ba3c.envs on the real ALE emulator and real gymnasium environments (no mocks)."""

from __future__ import annotations

import numpy as np
import pytest

from ba3c import envs
from ba3c.config import Config


def config(env: str = "ALE/Breakout-v5", **knobs) -> Config:
    cfg = Config()
    cfg.run.env = env
    for name, value in knobs.items():
        setattr(cfg.env, name, value)
    return cfg


def random_actions(rng, pool, n_actions=None):
    return rng.integers(0, n_actions or pool.spec.num_actions, pool.num_envs)


def test_breakout_pool_gives_stacked_channel_last_uint8_frames():
    cfg = config()
    spec = envs.describe(cfg)
    assert spec == envs.EnvSpec("ALE/Breakout-v5", (84, 84, 4), np.dtype(np.uint8), 4, True)
    with envs.make_pool(cfg, 3, seed=1) as pool:
        assert pool.spec == spec and pool.num_envs == 3
        obs = pool.reset()
        assert obs.shape == (3, 84, 84, 4) and obs.dtype == np.uint8
        rng = np.random.default_rng(0)
        for _ in range(20):
            step = pool.step(random_actions(rng, pool))
        assert step.observations.shape == (3, 84, 84, 4)
        assert step.observations.flags.c_contiguous
        assert step.rewards.dtype == np.float32 and step.rewards.shape == (3,)
        assert step.dones.dtype == np.bool_ and step.dones.shape == (3,)
        assert step.frames == 3 * 4
        # four real, different frames: the screen has content and the stack is not one frame
        assert step.observations.max() > 0
        assert not np.array_equal(step.observations[..., 0], step.observations[..., 3])


def test_rgb_variant_stacks_colour_frames_on_the_last_axis():
    cfg = config(rgb=True, frame_size=64, frame_stack=2)
    assert envs.describe(cfg).observation_shape == (64, 64, 6)
    with envs.make_pool(cfg, 2, seed=0) as pool:
        pool.reset()
        obs = pool.step(np.ones(2, np.int32)).observations
    assert obs.shape == (2, 64, 64, 6)
    env = envs.make_eval_env(cfg, seed=0)
    assert env.reset().shape == (64, 64, 6)
    env.close()


def play_both(cfg: Config, steps: int, seed: int = 3):
    """Plays the same random actions in a 1-env pool and in an EvalEnv; yields both obs."""
    rng = np.random.default_rng(seed)
    pool = envs.make_pool(cfg, 1, seed=0)
    evaluation = envs.make_eval_env(cfg, seed=0)
    try:
        yield pool.reset()[0], evaluation.reset()
        for _ in range(steps):
            action = int(rng.integers(0, 4))
            step = pool.step(np.array([action]))
            obs, _, done = evaluation.step(action)
            if done or step.dones[0]:
                return
            yield step.observations[0], obs
    finally:
        pool.close()
        evaluation.close()


@pytest.mark.parametrize("rgb", [False, True])
def test_pool_and_eval_env_see_exactly_the_same_observations(rgb):
    # Without no-ops and sticky actions both are deterministic, so the C++ preprocessing
    # of the pool and gymnasium's wrappers in EvalEnv must agree pixel for pixel.
    cfg = config("BreakoutNoFrameskip-v4", noop_max=0, episodic_life=False, rgb=rgb)
    pairs = list(play_both(cfg, 150))
    assert len(pairs) > 20
    for t, (from_pool, from_eval) in enumerate(pairs):
        assert from_pool.shape == from_eval.shape
        assert np.array_equal(from_pool, from_eval), f"observations differ at step {t}"


def play_eval(cfg: Config, seed: int, steps: int = 300):
    env = envs.make_eval_env(cfg, seed=seed)
    rng = np.random.default_rng(0)
    trajectory = [env.reset()]
    score = 0.0
    for _ in range(steps):
        obs, reward, done = env.step(int(rng.integers(0, 4)))
        trajectory.append(obs)
        score += reward
        if done:
            break
    env.close()
    return np.stack(trajectory), score


def test_eval_env_is_deterministic_for_a_seed():
    cfg = config("ALE/Breakout-v5")  # sticky actions and random no-ops: both seeded
    first, score1 = play_eval(cfg, seed=11)
    again, score2 = play_eval(cfg, seed=11)
    other, _ = play_eval(cfg, seed=12)
    assert np.array_equal(first, again) and score1 == score2
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_eval_env_gives_full_resolution_rgb_frames_when_recording():
    env = envs.make_eval_env(config(), seed=0, record=True)
    env.reset()
    frame = env.frame()
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8 and frame.max() > 0
    env.close()
    quiet = envs.make_eval_env(config(), seed=0)
    quiet.reset()
    with pytest.raises(RuntimeError, match="record=True"):
        quiet.frame()
    quiet.close()


def test_training_rewards_are_clipped_but_scores_are_not():
    # Space Invaders pays 5-30 points per alien: clipping to 1 shows at once.
    cfg = config("ALE/SpaceInvaders-v5", episodic_life=False, max_episode_steps=400)
    rng = np.random.default_rng(0)
    with envs.make_pool(cfg, 4, seed=0) as pool:
        pool.reset()
        clipped_sums = np.zeros(4)
        finished = []
        while not finished:
            step = pool.step(random_actions(rng, pool))
            assert step.rewards.max() <= 1.0 and step.rewards.min() >= -1.0
            clipped_sums += step.rewards
            finished = step.finished
    for f in finished:
        assert f.length == 400 and f.frames == 1600
        assert f.episode_return > clipped_sums[f.env_index] > 0


def test_episodic_life_ends_an_episode_per_life_but_scores_whole_games():
    cfg = config("ALE/Breakout-v5", episodic_life=True)
    rng = np.random.default_rng(0)
    with envs.make_pool(cfg, 4, seed=0) as pool:
        pool.reset()
        dones = np.zeros(4, int)
        steps = 0
        while True:
            step = pool.step(random_actions(rng, pool))
            steps += 1
            dones += step.dones
            if step.finished:
                break
    game = step.finished[0]
    # Breakout has 5 lives: four lost lives and the game over, all within one game
    assert dones[game.env_index] == 5
    assert game.length == steps and game.frames == 4 * steps


def test_without_episodic_life_only_game_overs_are_dones_and_envs_restart():
    cfg = config("ALE/Breakout-v5", episodic_life=False)
    rng = np.random.default_rng(0)
    with envs.make_pool(cfg, 4, seed=0) as pool:
        pool.reset()
        for _ in range(3000):
            step = pool.step(random_actions(rng, pool))
            assert sorted(f.env_index for f in step.finished) == list(np.flatnonzero(step.dones))
            if step.finished:
                break
        assert step.finished, "no game ended in 3000 random steps"
        i = step.finished[0].env_index
        # o_t[i] is already the next game's first observation: only the newest frame is
        # filled, the older slots of the stack are empty
        first = step.observations[i]
        assert first[..., 3].max() > 0 and first[..., :3].max() == 0


def test_episodes_are_cut_at_max_episode_steps():
    # With NOOP only, Breakout's ball is never served and the game would never end.
    cfg = config("BreakoutNoFrameskip-v4", noop_max=0, max_episode_steps=25)
    with envs.make_pool(cfg, 2, seed=0) as pool:
        pool.reset()
        steps = [pool.step(np.zeros(2, np.int32)) for _ in range(25)]
    assert not any(s.dones.any() for s in steps[:-1])
    assert [(f.env_index, f.length, f.frames) for f in steps[-1].finished] == [
        (0, 25, 100),
        (1, 25, 100),
    ]
    env = envs.make_eval_env(cfg, seed=0)
    env.reset()
    dones = [env.step(0)[2] for _ in range(25)]
    assert dones == [False] * 24 + [True]
    env.close()


def test_cartpole_pool_gives_float_vectors_and_scores_episodes():
    cfg = config("CartPole-v1")
    assert envs.describe(cfg) == envs.EnvSpec("CartPole-v1", (4,), np.dtype(np.float32), 2, False)
    rng = np.random.default_rng(0)
    with envs.make_pool(cfg, 5, seed=0) as pool:
        assert pool.reset().dtype == np.float32
        finished = []
        for _ in range(200):
            step = pool.step(random_actions(rng, pool))
            finished += step.finished
    assert step.observations.shape == (5, 4) and step.observations.dtype == np.float32
    assert len(finished) >= 5
    for f in finished:  # CartPole pays 1 per step
        assert f.episode_return == f.length == f.frames


def test_cartpole_keeps_its_own_shorter_step_limit():
    env = envs.make_eval_env(config("CartPole-v1"), seed=0)
    env.reset()
    assert env._env.spec.max_episode_steps == 500
    env.close()


@pytest.mark.parametrize(
    "env_id, problem",
    [
        ("Foo-v0", "unknown environment id 'Foo-v0'"),
        ("ALE/Breakot-v5", "Did you mean: `Breakout`"),
        ("Pendulum-v1", "discrete actions"),
        ("FrozenLake-v1", "1-D Box"),
    ],
)
def test_unusable_ids_are_one_line_errors_that_say_how_to_list_valid_ids(env_id, problem):
    with pytest.raises(envs.EnvError) as info:
        envs.make_pool(config(env_id), 2, seed=0)
    message = str(info.value)
    assert problem in message and "ba3c simulator --list-envs" in message
    assert "\n" not in message


def test_both_id_styles_name_the_same_game_with_their_own_sticky_actions():
    assert envs._atari(config("ALE/Breakout-v5")) == envs._Atari("breakout", 0.25)
    assert envs._atari(config("BreakoutNoFrameskip-v4")) == envs._Atari("breakout", 0.0)
    assert envs._atari(config("ALE/Breakout-v5", sticky_actions=0.0)) == envs._Atari(
        "breakout", 0.0
    )
    assert envs._atari(config("CartPole-v1")) is None


BAD_ACTIONS = [
    (np.zeros(2, int), "shape"),
    (np.array([0, 1, 2]), r"\[0, 2\)"),
    (np.array([-1, 0, 0]), r"\[0, 2\)"),
    (np.zeros(3), "integers"),
]


def first_games(bad_calls) -> list[tuple[int, int]]:
    with envs.make_pool(config("CartPole-v1"), 3, seed=5) as pool:
        pool.reset()
        for bad, problem in bad_calls:
            with pytest.raises(ValueError, match=problem):
                pool.step(bad)
        finished = []
        while len({f.env_index for f in finished}) < 3:
            finished += pool.step(np.zeros(3, np.int32)).finished
    return sorted({f.env_index: f.length for f in reversed(finished)}.items())


def test_bad_actions_are_refused_and_change_nothing():
    # the same seed and actions give the same games whether or not bad calls came first
    assert first_games(BAD_ACTIONS) == first_games([])
