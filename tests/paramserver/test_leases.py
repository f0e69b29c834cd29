"""How many pushes a sync round waits for, as learners come, go and die."""

from services.paramserver.leases import Leases


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_learners_not_seen_yet_are_waited_for_until_a_round_times_out():
    leases = Leases(30.0, Clock())
    leases.renew("learner-0")
    assert leases.expected_pushes(2) == 2  # learner-1 may still be starting
    leases.stop_waiting_for_unseen()
    assert leases.expected_pushes(2) == 1
    leases.renew("learner-1")
    assert leases.expected_pushes(2) == 2


def test_a_revoked_or_silent_learner_is_not_waited_for_until_it_calls_again():
    clock = Clock()
    leases = Leases(30.0, clock)
    for i in range(3):
        leases.renew(f"learner-{i}")
    assert leases.expected_pushes(2) == 2  # more learners than replicas: still 2
    leases.revoke(["learner-1", "learner-2"])
    assert leases.expected_pushes(2) == 1 and leases.live() == {"learner-0"}
    leases.renew("learner-1")
    assert leases.expected_pushes(2) == 2
    clock.now = 31.0
    leases.renew("learner-0")
    assert leases.live() == {"learner-0"} and leases.expected_pushes(4) == 2  # 1 unseen
    assert leases.known == 3
