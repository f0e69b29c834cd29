"""The one retry policy (ba3c/backoff.py) and the paramserver client's retry decision,
in-process: the pause and the randomness are passed in, so nothing sleeps."""

from __future__ import annotations

import grpc
import pytest

from ba3c.backoff import Backoff, Stopped, retry
from ba3c.paramserver_client import RETRYABLE, should_retry


def no_jitter(low: float, high: float) -> float:
    return 1.0


def test_pauses_double_up_to_the_maximum_and_reset_starts_over():
    backoff = Backoff(uniform=no_jitter)
    assert [round(backoff.next(), 3) for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == pytest.approx(0.2)


def test_jitter_stays_within_twenty_percent():
    seen = []
    backoff = Backoff(uniform=lambda low, high: seen.append((low, high)) or high)
    assert backoff.next() == pytest.approx(0.24)
    assert seen == [(0.8, 1.2)]


def test_a_nonsensical_policy_is_refused():
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(initial=3, maximum=1)


class Flaky:
    """Fails with the given errors, then returns 'ok'."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retry_pauses_by_the_backoff_between_retryable_failures():
    pauses, told = [], []
    attempt = Flaky(TimeoutError("1"), TimeoutError("2"))
    result = retry(
        attempt,
        lambda e: isinstance(e, TimeoutError),
        lambda s: pauses.append(s) or False,
        Backoff(uniform=no_jitter),
        lambda e, s: told.append((str(e), s)),
    )
    assert result == "ok" and attempt.calls == 3
    assert pauses == pytest.approx([0.2, 0.4])
    assert told == [("1", pytest.approx(0.2)), ("2", pytest.approx(0.4))]


def test_retry_raises_what_it_may_not_retry_at_once():
    pauses = []
    attempt = Flaky(TimeoutError(), KeyError("bad"))
    with pytest.raises(KeyError):
        retry(attempt, lambda e: isinstance(e, TimeoutError), lambda s: pauses.append(s) or False)
    assert attempt.calls == 2 and len(pauses) == 1


def test_a_stop_during_the_pause_ends_with_stopped():
    attempt = Flaky(TimeoutError(), TimeoutError())
    with pytest.raises(Stopped):
        retry(attempt, lambda e: True, lambda s: True)
    assert attempt.calls == 1


def test_stopped_from_the_attempt_is_never_retried():
    attempt = Flaky(Stopped("going"))
    with pytest.raises(Stopped):
        retry(attempt, lambda e: True, lambda s: False)
    assert attempt.calls == 1


def test_the_retry_decision_for_paramserver_calls():
    for code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    ):
        assert should_retry(code) and code in RETRYABLE
    for code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
    ):
        assert not should_retry(code) and not should_retry(code, wait_uninitialized=True)
    # a shard that is not initialized yet is waited for only where the caller asks
    assert not should_retry(grpc.StatusCode.FAILED_PRECONDITION)
    assert should_retry(grpc.StatusCode.FAILED_PRECONDITION, wait_uninitialized=True)
