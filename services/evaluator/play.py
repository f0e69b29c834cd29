"""Playing evaluation episodes: the loop, the per-episode seeds, the optional recording.

Nothing here knows about TensorFlow or the shards: a `Policy` maps a batch of observations
and one random generator per row to the rows' actions, and each environment is a
`ba3c.envs` EvalEnv (training's preprocessing, unclipped rewards, game over at the real end
of the game).

The episodes of an evaluation are played side by side, one environment each, with one
policy call per step for all those still playing: a forward pass over a batch of k costs
little more than over one (a Pong evaluation of 5 episodes with the initial network: 6.7 s
of CPU side by side, 12.5 s one after another; the evaluator shares the cores with
training).

Episode i of an evaluation always uses the same environment seed and the same random
stream for sampling actions, derived from the run's seed. So two evaluations of the same
parameters, in the service or offline, play the same games and get the same scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from services.evaluator.stats import Episode

# (observations [k, ...], one generator per row) -> k actions
Policy = Callable[[np.ndarray, Sequence[np.random.Generator]], Sequence[int]]

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


def play_episodes(
    envs: Sequence[EvalEnv],
    policy: Policy,
    seed: int,
    max_steps: int,
    sink: FrameSink | None = None,
    first: int = 0,
) -> list[Episode]:
    """Plays episode first + j in envs[j], all side by side, each to game over or
    `max_steps` agent steps; records envs[0]'s episode if `sink`. Episode i's games and
    action samples depend only on (seed, i), not on which are played beside it."""
    observations, generators = [], []
    for i, env in enumerate(envs):
        env_seed, rng = episode_seeds(seed, first + i)
        observations.append(env.reset(seed=env_seed))
        generators.append(rng)
    if sink is not None and envs:
        sink.add(envs[0].frame())
    scores = [0.0] * len(envs)
    steps = [0] * len(envs)
    over = [False] * len(envs)
    playing = [i for i in range(len(envs)) if max_steps > 0]
    while playing:
        actions = policy(
            np.stack([observations[i] for i in playing]), [generators[i] for i in playing]
        )
        for i, action in zip(playing, actions, strict=True):
            observations[i], reward, over[i] = envs[i].step(int(action))
            scores[i] += float(reward)
            steps[i] += 1
            if i == 0 and sink is not None:
                sink.add(envs[0].frame())
        playing = [i for i in playing if not over[i] and steps[i] < max_steps]
    return [Episode(score=scores[i], length=steps[i], finished=over[i]) for i in range(len(envs))]
