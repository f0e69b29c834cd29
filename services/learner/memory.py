"""Per-environment n-step memory: the last `t_max` steps of every environment of a pool.

The step protocol (protos/ba3c/v1/learner.proto) hands the learner, for each step t, the
observation o_t and, one request later, the reward r_t and done flag d_t its action
produced. Each environment keeps (o, a, V(o), r) for its open segment. A segment closes

  - when the episode ends (d_t): returns bootstrap from 0;
  - when it holds t_max + 1 steps: returns bootstrap from V of the newest step, which stays
    in memory as the first step of the next segment.

Returns are n-step discounted returns, R_i = r_i + gamma * R_{i+1}, computed backwards from
the bootstrap value (as tensorpack's A3C does in its "client memory").

Each step also remembers which parameter version chose its action and when, so that the
trainer can measure the policy lag of what it trains on (versions and seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Transition:
    observation: np.ndarray
    action: int
    ret: float  # the n-step discounted return from this step
    version: int = 0  # parameter version of the policy that chose `action`
    acted_at: float = 0.0  # time.monotonic() when it was chosen


@dataclass
class _Step:
    observation: np.ndarray
    action: int
    value: float
    reward: float | None = None
    version: int = 0
    acted_at: float = 0.0


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

    def add_steps(
        self,
        observations: np.ndarray,
        actions,
        values,
        version: int = 0,
        acted_at: float = 0.0,
    ) -> list[Transition]:
        """Adds (o_t, a_t, V(o_t)) per environment, chosen by parameters `version` at
        `acted_at`; returns the transitions of segments that reached t_max + 1 steps."""
        out: list[Transition] = []
        for i, env in enumerate(self.envs):
            step = _Step(
                observations[i], int(actions[i]), float(values[i]), None, version, acted_at
            )
            env.steps.append(step)
            if len(env.steps) == self.t_max + 1:
                out.extend(self._close(env, bootstrap=env.steps[-1].value, keep_last=True))
        return out

    def _close(self, env: EnvMemory, bootstrap: float, keep_last: bool) -> list[Transition]:
        closed = env.steps[:-1] if keep_last else env.steps
        returns = discounted_returns([s.reward for s in closed], bootstrap, self.gamma)
        env.steps = env.steps[-1:] if keep_last else []
        pairs = zip(closed, returns, strict=True)
        return [Transition(s.observation, s.action, r, s.version, s.acted_at) for s, r in pairs]

    def open_steps(self) -> int:
        """Steps waiting in unfinished segments (lost if the pool disconnects)."""
        return sum(len(env.steps) for env in self.envs)


def policy_lag(batch: list[Transition], version: int, now: float) -> tuple[np.ndarray, np.ndarray]:
    """Per transition: (versions, seconds) between choosing its action and training on it."""
    versions = np.fromiter((version - t.version for t in batch), np.int64, len(batch))
    seconds = np.fromiter((now - t.acted_at for t in batch), np.float64, len(batch))
    return np.maximum(versions, 0), np.maximum(seconds, 0.0)
