"""Per-environment n-step memory: the last `t_max` steps of every environment of a pool.

The step protocol (protos/ba3c/v1/learner.proto) hands the learner, for each step t, the
observation o_t and, one request later, the reward r_t and done flag d_t its action
produced. Each environment keeps (o, a, V(o), r) for its open segment. A segment closes

  - when the episode ends (d_t): returns bootstrap from 0;
  - when it holds t_max + 1 steps: returns bootstrap from V of the newest step, which stays
    in memory as the first step of the next segment.

Returns are n-step discounted returns, R_i = r_i + gamma * R_{i+1}, computed backwards from
the bootstrap value (as tensorpack's A3C does in its "client memory").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Transition:
    observation: np.ndarray
    action: int
    ret: float  # the n-step discounted return from this step


@dataclass
class _Step:
    observation: np.ndarray
    action: int
    value: float
    reward: float | None = None


@dataclass
class EnvMemory:
    steps: list[_Step] = field(default_factory=list)


def discounted_returns(rewards: list[float], bootstrap: float, gamma: float) -> list[float]:
    """[R_0, ..., R_{n-1}] with R_i = rewards[i] + gamma * R_{i+1} and R_n = bootstrap."""
    out = [0.0] * len(rewards)
    ret = float(bootstrap)
    for i in range(len(rewards) - 1, -1, -1):
        ret = float(rewards[i]) + gamma * ret
        out[i] = ret
    return out


class PoolMemory:
    """The open segments of one pool's N environments."""

    def __init__(self, num_envs: int, t_max: int, gamma: float):
        self.num_envs = num_envs
        self.t_max = t_max
        self.gamma = gamma
        self.envs = [EnvMemory() for _ in range(num_envs)]

    def record_outcomes(self, rewards, dones) -> list[Transition]:
        """Attaches r_{t-1}, d_{t-1} to each environment's newest step; returns the
        transitions of the episodes that ended."""
        out: list[Transition] = []
        for i, env in enumerate(self.envs):
            if not env.steps:
                continue
            env.steps[-1].reward = float(rewards[i])
            if dones[i]:
                out.extend(self._close(env, bootstrap=0.0, keep_last=False))
        return out

    def add_steps(self, observations: np.ndarray, actions, values) -> list[Transition]:
        """Adds (o_t, a_t, V(o_t)) per environment; returns the transitions of segments that
        reached t_max + 1 steps."""
        out: list[Transition] = []
        for i, env in enumerate(self.envs):
            env.steps.append(_Step(observations[i], int(actions[i]), float(values[i])))
            if len(env.steps) == self.t_max + 1:
                out.extend(self._close(env, bootstrap=env.steps[-1].value, keep_last=True))
        return out

    def _close(self, env: EnvMemory, bootstrap: float, keep_last: bool) -> list[Transition]:
        closed = env.steps[:-1] if keep_last else env.steps
        returns = discounted_returns([s.reward for s in closed], bootstrap, self.gamma)
        env.steps = env.steps[-1:] if keep_last else []
        pairs = zip(closed, returns, strict=True)
        return [Transition(s.observation, s.action, r) for s, r in pairs]

    def open_steps(self) -> int:
        """Steps waiting in unfinished segments (lost if the pool disconnects)."""
        return sum(len(env.steps) for env in self.envs)
