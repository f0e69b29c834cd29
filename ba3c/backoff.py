"""The one retry policy of every ba3c client: exponential backoff with jitter, and a retry loop.

`Backoff` gives the pauses between attempts: 0.2 s, doubling up to 5 s, each shaken by
±20% so that clients that failed together do not retry together; `reset()` after a
success starts over. The simulator pools' reconnect loop and the paramserver client
(`ba3c/paramserver_client.py`) both use it, so a reconnect storm looks the same everywhere.

`retry` calls an attempt until it succeeds, pausing by the backoff after every failure it
is told may pass. The pause is a function passed in (`threading.Event.wait` in services:
it returns True when the process is stopping, which ends the loop with `Stopped`), and so is
the randomness, so that tests run the policy in-process without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INITIAL = 0.2  # seconds before the first retry
MAXIMUM = 5.0  # longest pause
FACTOR = 2.0
JITTER = 0.2  # each pause is scaled by a uniform factor in [1 - JITTER, 1 + JITTER]


class Stopped(RuntimeError):
    """The process is stopping; the call was given up."""


class Backoff:
    """Pauses between attempts: `initial` growing by `factor` up to `maximum`, with jitter."""

    def __init__(
        self,
        initial: float = INITIAL,
        maximum: float = MAXIMUM,
        factor: float = FACTOR,
        jitter: float = JITTER,
        uniform: Callable[[float, float], float] = random.uniform,
    ):
        if not 0 < initial <= maximum or factor < 1 or not 0 <= jitter < 1:
            raise ValueError(
                f"need 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1; got {initial}, "
                f"{maximum}, {factor}, {jitter}"
            )
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._uniform = uniform
        self._next = initial

    def reset(self) -> None:
        """After a success: the next failure waits `initial` again."""
        self._next = self.initial

    def next(self) -> float:
        """The pause before the next attempt (and grows the one after)."""
        delay = self._next * self._uniform(1 - self.jitter, 1 + self.jitter)
        self._next = min(self.maximum, self._next * self.factor)
        return delay


def retry(
    attempt: Callable[[], T],
    retryable: Callable[[Exception], bool],
    pause: Callable[[float], bool],
    backoff: Backoff | None = None,
    on_failure: Callable[[Exception, float], None] | None = None,
) -> T:
    """Returns `attempt()`, calling it again after each failure that `retryable` accepts.

    Between attempts it calls `pause(seconds)` with the backoff's next pause; `pause`
    returning True (stop requested) raises `Stopped`. A failure `retryable` refuses is
    raised as it is. `on_failure(error, pause)` is told of every retried failure first.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            return attempt()
        except Stopped:
            raise
        except Exception as e:
            if not retryable(e):
                raise
            delay = backoff.next()
            if on_failure is not None:
                on_failure(e, delay)
            if pause(delay):
                raise Stopped(f"stopped while retrying after {e!r}") from None
