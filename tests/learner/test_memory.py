"""n-step returns and segment bookkeeping, against hand computations."""

import numpy as np
import pytest

from services.learner.memory import PoolMemory, discounted_returns, policy_lag


def test_discounted_returns_by_hand():
    # R2 = 2 + .5*4 = 4; R1 = 0 + .5*4 = 2; R0 = 1 + .5*2 = 2
    assert discounted_returns([1.0, 0.0, 2.0], bootstrap=4.0, gamma=0.5) == [2.0, 2.0, 4.0]
    assert discounted_returns([], bootstrap=3.0, gamma=0.9) == []


def obs(value, n=1):
    return np.full((n, 2), value, np.float32)


def test_a_full_segment_bootstraps_from_the_value_of_the_newest_step():
    memory = PoolMemory(num_envs=1, t_max=3, gamma=0.5)
    values = [1.0, 2.0, 3.0, 4.0]
    rewards = [1.0, 0.0, 2.0]
    closed = memory.add_steps(obs(0), [0], [values[0]])
    for t in range(1, 4):
        closed += memory.record_outcomes([rewards[t - 1]], [False])
        closed += memory.add_steps(obs(t), [t], [values[t]])
    assert [c.ret for c in closed] == [2.0, 2.0, 4.0]
    assert [c.action for c in closed] == [0, 1, 2]
    assert [float(c.observation[0]) for c in closed] == [0.0, 1.0, 2.0]
    # the newest step stays as the start of the next segment
    assert memory.open_steps() == 1
    # ...and ends its episode with reward 1: return 1, nothing bootstrapped
    ended = memory.record_outcomes([1.0], [True])
    assert [(c.action, c.ret) for c in ended] == [(3, 1.0)]
    assert memory.open_steps() == 0


def test_an_episode_end_closes_a_short_segment_with_zero_bootstrap():
    memory = PoolMemory(num_envs=1, t_max=5, gamma=0.9)
    memory.add_steps(obs(0), [1], [10.0])
    memory.record_outcomes([1.0], [False])
    memory.add_steps(obs(1), [2], [10.0])
    ended = memory.record_outcomes([2.0], [True])
    assert [c.ret for c in ended] == pytest.approx([1.0 + 0.9 * 2.0, 2.0])
    # the observation after a done starts a fresh segment
    assert memory.add_steps(obs(2), [0], [0.0]) == []
    assert memory.open_steps() == 1


def test_environments_of_a_pool_keep_separate_segments():
    memory = PoolMemory(num_envs=2, t_max=2, gamma=1.0)
    memory.add_steps(obs(0, 2), [0, 1], [5.0, 7.0])
    ended = memory.record_outcomes([1.0, 3.0], [False, True])
    assert [(c.action, c.ret) for c in ended] == [(1, 3.0)]
    closed = memory.add_steps(obs(1, 2), [0, 0], [5.0, 7.0])
    assert closed == []
    memory.record_outcomes([1.0, 1.0], [False, False])
    closed = memory.add_steps(obs(2, 2), [1, 1], [6.0, 9.0])
    # env 0 reached t_max + 1 steps: returns 1 + 1 + 6 = 8 and 1 + 6 = 7
    assert [c.ret for c in closed] == [8.0, 7.0]
    assert memory.open_steps() == 1 + 2


def test_transitions_carry_the_version_and_time_that_chose_their_action():
    obs = np.zeros((1, 3), np.float32)
    closed = PoolMemory(num_envs=1, t_max=2, gamma=0.5)
    closed.add_steps(obs, [0], [0.0], version=7, acted_at=100.0)
    closed.record_outcomes([1.0], [False])
    closed.add_steps(obs, [1], [0.0], version=9, acted_at=101.0)
    transitions = closed.record_outcomes([1.0], [True])
    assert [(t.version, t.acted_at) for t in transitions] == [(7, 100.0), (9, 101.0)]
    versions, seconds = policy_lag(transitions, version=12, now=103.5)
    assert versions.tolist() == [5, 3] and seconds.tolist() == [3.5, 2.5]
    # a shard that restarted from an older checkpoint: lag is never negative
    assert policy_lag(transitions, version=0, now=0.0)[0].tolist() == [0, 0]
