"""When the evaluator starts an evaluation: new parameters, and time or versions passed."""

from services.evaluator.main import Schedule


def test_the_first_parameters_are_evaluated_at_once():
    assert Schedule(60, 0).due((0, 0), now=0.0)


def test_the_same_parameters_are_never_evaluated_twice():
    s = Schedule(60, 0)
    s.started((5, 5), now=0.0)
    assert not s.due((5, 5), now=1e6)


def test_new_parameters_wait_for_the_interval():
    s = Schedule(60, 0)
    s.started((5, 5), now=100.0)
    assert not s.due((6, 6), now=159.0)
    assert s.seconds_left(159.0) == 1.0
    assert s.due((6, 6), now=160.0)


def test_enough_new_versions_do_not_wait_for_the_interval():
    s = Schedule(600, 10)
    s.started((5, 5), now=0.0)
    assert not s.due((14, 15), now=1.0)  # the slowest shard counts
    assert s.due((15, 16), now=1.0)
