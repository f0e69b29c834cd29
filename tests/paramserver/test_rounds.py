"""Sync rounds in-process with a fake clock: when a round completes, what is dropped, and
what `sync_timeout` does. No threads, no gRPC, no wall-clock margins."""

import numpy as np
import pytest

from services.paramserver.leases import Leases
from services.paramserver.sync import COMPLETE, JOINED, STALE, SURPLUS, TIMED_OUT, Rounds

TIMEOUT = 10.0
LEASE = 30.0


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def grads(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, np.float32), "b": np.full(3, value, np.float32)}


def rounds_of(learners: int, replicas: int, clock: Clock) -> Rounds:
    leases = Leases(LEASE, clock)
    for i in range(learners):
        leases.renew(f"learner-{i}")
    return Rounds(replicas, TIMEOUT, leases, clock)


def test_a_round_completes_when_every_expected_learner_pushed():
    clock = Clock()
    rounds = rounds_of(2, 2, clock)
    joined, rnd = rounds.offer("learner-0", 7, 0, grads(1.0))
    assert (joined, rnd.version, rnd.count) == (JOINED, 7, 1)
    assert rounds.next_step(rnd) == TIMEOUT  # waits, at most the whole timeout
    clock.now += 3
    assert rounds.offer("learner-1", 7, 0, grads(3.0)) == (JOINED, rnd)
    assert rounds.next_step(rnd) == COMPLETE
    assert rnd.age == 3
    assert rounds.close(rnd, timed_out=False) == set()
    assert rounds.current is None
    total, scale = rnd.average()  # the optimizer's pass applies the scale
    assert scale == 0.5 and np.array_equal(total["w"], np.full((2, 3), 4.0, np.float32))
    assert rounds.offer("learner-0", 8, 0, grads(1.0))[1] is not rnd  # the next one is new


def test_a_stale_push_is_dropped_and_neither_opens_nor_joins_a_round():
    clock = Clock()
    rounds = rounds_of(2, 2, clock)
    assert rounds.offer("learner-0", 7, 1, grads(1.0)) == (STALE, None)
    assert rounds.current is None
    clock.now += 8  # the round opens with the first fresh push, not with the stale one
    joined, rnd = rounds.offer("learner-1", 7, 0, grads(1.0))
    assert joined == JOINED and rnd.deadline == clock.now + TIMEOUT
    assert rounds.offer("learner-0", 7, 2, grads(1.0)) == (STALE, None)
    assert rnd.count == 1 and rounds.next_step(rnd) == TIMEOUT


def test_a_second_push_of_one_learner_in_a_round_is_surplus():
    rounds = rounds_of(2, 2, Clock())
    _, rnd = rounds.offer("learner-0", 0, 0, grads(1.0))
    assert rounds.offer("learner-0", 0, 0, grads(5.0)) == (SURPLUS, rnd)
    assert rnd.clients == ["learner-0"]
    total, scale = rnd.average()
    assert scale == 1.0 and total["b"].tolist() == [1.0, 1.0, 1.0]


def test_sync_timeout_applies_what_arrived_and_stops_waiting_for_the_missing_learner():
    clock = Clock()
    rounds = rounds_of(2, 2, clock)
    _, rnd = rounds.offer("learner-0", 0, 0, grads(1.0))
    clock.now += TIMEOUT - 0.5
    assert rounds.next_step(rnd) == pytest.approx(0.5)
    clock.now += 0.5
    assert rounds.next_step(rnd) == TIMED_OUT
    assert rounds.close(rnd, timed_out=True) == {"learner-1"}
    # the next round does not wait for the learner that missed the last one...
    _, nxt = rounds.offer("learner-0", 1, 0, grads(1.0))
    assert rounds.next_step(nxt) == COMPLETE
    rounds.close(nxt, timed_out=False)
    # ...until it calls again
    rounds.leases.renew("learner-1")
    _, again = rounds.offer("learner-0", 2, 0, grads(1.0))
    assert rounds.next_step(again) == TIMEOUT


def test_a_learner_whose_lease_ran_out_is_not_waited_for():
    clock = Clock()
    rounds = rounds_of(2, 2, clock)
    clock.now += LEASE - 1
    rounds.leases.renew("learner-0")
    _, rnd = rounds.offer("learner-0", 0, 0, grads(1.0))
    assert rounds.next_step(rnd) == TIMEOUT
    clock.now += 2  # learner-1 made no call for longer than its lease
    assert rounds.next_step(rnd) == COMPLETE


def test_learners_not_seen_yet_are_waited_for_until_a_round_times_out():
    clock = Clock()
    rounds = rounds_of(1, 3, clock)  # two learners of three are still starting
    _, rnd = rounds.offer("learner-0", 0, 0, grads(1.0))
    clock.now += TIMEOUT
    assert rounds.next_step(rnd) == TIMED_OUT
    assert rounds.close(rnd, timed_out=True) == set()
    _, nxt = rounds.offer("learner-0", 1, 0, grads(1.0))
    assert rounds.next_step(nxt) == COMPLETE  # one timeout, not one per round
