"""Evaluation episodes played side by side (services/evaluator/play.py), on real
gymnasium environments with a numpy policy: each episode's game and action samples depend
only on the run's seed and its index, not on the episodes played beside it."""

import numpy as np

from ba3c import envs
from ba3c.config import Config
from ba3c.models import sample_actions
from services.evaluator.play import play_episodes


def _config(env: str) -> Config:
    cfg = Config()
    cfg.run.env = env
    return cfg


class LinearPolicy:
    """Samples from softmax(obs @ W): a policy whose choices depend on what it sees."""

    def __init__(self, obs_size: int, actions: int):
        self.weights = np.random.default_rng(7).normal(size=(obs_size, actions))
        self.batch_sizes: list[int] = []

    def __call__(self, observations, generators):
        self.batch_sizes.append(len(observations))
        logits = observations.reshape(len(observations), -1) @ self.weights
        return [
            int(sample_actions(logits[j : j + 1], False, g)[0]) for j, g in enumerate(generators)
        ]


def _play(cfg: Config, count: int, max_steps: int, policy: LinearPolicy):
    played = [envs.make_eval_env(cfg, cfg.run.seed) for _ in range(count)]
    try:
        return play_episodes(played, policy, cfg.run.seed, max_steps)
    finally:
        for env in played:
            env.close()


def test_an_episode_plays_the_same_whatever_is_played_beside_it():
    cfg = _config("CartPole-v1")
    together = _play(cfg, 4, 500, LinearPolicy(4, 2))
    for i in range(4):
        alone_or_fewer = _play(cfg, i + 1, 500, LinearPolicy(4, 2))
        assert alone_or_fewer[i] == together[i]
    lengths = [e.length for e in together]
    assert len(set(lengths)) > 1, f"the seeds should give different games, got {lengths}"


def test_episodes_played_in_groups_are_the_episodes_played_together():
    cfg = _config("CartPole-v1")
    together = _play(cfg, 5, 500, LinearPolicy(4, 2))
    played = [envs.make_eval_env(cfg, cfg.run.seed) for _ in range(2)]
    try:
        policy = LinearPolicy(4, 2)
        groups = []
        for first in range(0, 5, 2):
            group = played[: min(2, 5 - first)]
            groups += play_episodes(group, policy, cfg.run.seed, 500, first=first)
    finally:
        for env in played:
            env.close()
    assert groups == together
    assert max(policy.batch_sizes) == 2


def test_finished_episodes_leave_the_batch_and_max_steps_cuts_the_rest():
    cfg = _config("CartPole-v1")
    policy = LinearPolicy(4, 2)
    episodes = _play(cfg, 3, 30, policy)
    assert all(e.length <= 30 for e in episodes)
    for e in episodes:
        assert e.finished == (e.length < 30)
    # one call per step while anyone plays; the batch never grows
    assert len(policy.batch_sizes) == max(e.length for e in episodes)
    assert policy.batch_sizes == sorted(policy.batch_sizes, reverse=True)
    assert policy.batch_sizes[0] == 3
    assert sum(policy.batch_sizes) == sum(e.length for e in episodes)
