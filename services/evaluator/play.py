"""Playing evaluation episodes: the loop, the per-episode seeds, the optional recording.

Nothing here knows about TensorFlow or the shards: a `Policy` maps one observation and a
random generator to an action, and the environment is a `ba3c.envs` EvalEnv (training's
preprocessing, unclipped rewards, game over at the real end of the game).

Episode i of an evaluation always uses the same environment seed and the same random
stream for sampling actions, derived from the run's seed. So two evaluations of the same
parameters, in the service or offline, play the same games and get the same scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from services.evaluator.stats import Episode

Policy = Callable[[np.ndarray, np.random.Generator], int]

_EVAL_STREAM = 0xE7A1  # keeps evaluation seeds apart from the simulators' training seeds


class EvalEnv(Protocol):
    def reset(self, seed: int | None = None) -> np.ndarray: ...
    def step(self, action: int) -> tuple[np.ndarray, float, bool]: ...
    def frame(self) -> np.ndarray: ...


class FrameSink(Protocol):
    def add(self, frame: np.ndarray) -> None: ...


def episode_seeds(seed: int, episode: int) -> tuple[int, np.random.Generator]:
    """(environment seed, action-sampling generator) of episode `episode`."""
    sequence = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _EVAL_STREAM, int(episode)])
    env_seed = int(sequence.generate_state(1)[0] & 0x7FFFFFFF)
    return env_seed, np.random.default_rng(sequence)


def play_episode(
    env: EvalEnv,
    policy: Policy,
    seed: int,
    episode: int,
    max_steps: int,
    sink: FrameSink | None = None,
) -> Episode:
    """Plays one episode to game over or `max_steps` agent steps; records if `sink`."""
    env_seed, rng = episode_seeds(seed, episode)
    observation = env.reset(seed=env_seed)
    if sink is not None:
        sink.add(env.frame())
    score, steps, over = 0.0, 0, False
    while not over and steps < max_steps:
        observation, reward, over = env.step(policy(observation, rng))
        score += float(reward)
        steps += 1
        if sink is not None:
            sink.add(env.frame())
    return Episode(score=score, length=steps, finished=over)
