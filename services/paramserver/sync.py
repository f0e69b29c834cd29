"""Sync mode's rounds: the pushes computed at one version, summed until they are applied.

A round opens with the first push computed at the shard's current version and closes
when `Leases.expected_pushes` pushes have arrived, or when `sync_timeout` seconds have
passed since it opened (then it applies what it has, and the learners that did not push
are no longer waited for). A push computed at an older version is dropped as stale, a
second push of one learner in one round as surplus. The pushes are summed in place into
float32 buffers the shard owns (one compiled pass per variable, bfloat16 read as it
arrived); the shard applies the mean once (the optimizer's pass scales the sum by 1/N),
bumps the version, and every caller that took part gets the same encoded parameters.

Everything here is decided under the shard's lock with a clock passed in, no threads and no
gRPC, so that tests can drive rounds with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

from services.paramserver import kernels
from services.paramserver.leases import Leases

Clock = Callable[[], float]

# what became of a push (`Rounds.offer`)
JOINED, STALE, SURPLUS = "joined", "stale", "surplus"
# what a round does next (`Round.next_step`), besides waiting a number of seconds
COMPLETE, TIMED_OUT = "complete", "timed out"


class Round:
    """Pushes at one version. Not thread-safe: the shard's lock guards it."""

    def __init__(
        self,
        version: int,
        timeout: float,
        clock: Clock = time.monotonic,
        sums: Mapping[str, np.ndarray] | None = None,
    ):
        """`sums`: float32 buffers shaped like the variables, overwritten by the first push
        (None: allocated at the first push)."""
        self.version = version
        self._clock = clock
        self.opened = clock()
        self.deadline = self.opened + timeout
        self.clients: list[str] = []
        self._sum = sums
        # the parameters' wire types the members asked for (tensor_pb2 DType codes)
        self.reply_dtypes: set[int] = set()
        # set when the round is applied: (new version, {dtype: encoded reply})
        self.result: tuple[int, dict[int, bytes]] | None = None

    @property
    def count(self) -> int:
        return len(self.clients)

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def age(self) -> float:
        """Seconds since the round opened."""
        return self._clock() - self.opened

    def add(self, client_id: str, grads: Mapping[str, np.ndarray]) -> None:
        """Adds one push (one compiled pass per variable)."""
        first = not self.clients
        if self._sum is None:
            self._sum = {name: np.empty(np.shape(g), np.float32) for name, g in grads.items()}
        for name, g in grads.items():
            kernels.accumulate(self._sum[name].reshape(-1), kernels.as_kernel_input(g), first)
        self.clients.append(client_id)

    def next_step(self, expected: int) -> str | float:
        """COMPLETE once `expected` pushes arrived, TIMED_OUT once the deadline passed, else
        the seconds left until it does."""
        if self.count >= expected:
            return COMPLETE
        remaining = self.deadline - self._clock()
        return TIMED_OUT if remaining <= 0 else remaining

    def average(self) -> tuple[Mapping[str, np.ndarray], float]:
        """(sum, scale): the mean of the pushes is sum * scale (the optimizer applies it)."""
        assert self.clients, "a round is never applied empty"
        return self._sum, (1.0 / self.count if self.count > 1 else 1.0)


class Rounds:
    """One shard's sync protocol: which push joins which round, when a round closes, whom
    the next round waits for. Not thread-safe: the shard's lock guards it."""

    def __init__(
        self,
        replicas: int,
        timeout: float,
        leases: Leases,
        clock: Clock,
        sums: Mapping[str, np.ndarray] | None = None,
    ):
        self.replicas = replicas
        self.sums = sums  # the shard's buffers every round sums into
        self.timeout = timeout
        self.leases = leases
        self._clock = clock
        self.current: Round | None = None

    def offer(
        self, client_id: str, version: int, staleness: int, grads: Mapping[str, np.ndarray]
    ) -> tuple[str, Round | None]:
        """Adds a push computed `staleness` versions behind the shard's `version`.

        Returns (JOINED, its round), (SURPLUS, the round it already pushed to) or (STALE,
        None): a stale push neither opens a round nor counts in one.
        """
        if staleness > 0:
            return STALE, None
        rnd = self.current
        if rnd is None:
            rnd = self.current = Round(version, self.timeout, self._clock, self.sums)
        if client_id in rnd.clients:
            return SURPLUS, rnd
        rnd.add(client_id, grads)
        return JOINED, rnd

    def next_step(self, rnd: Round) -> str | float:
        """What `rnd` does next, waiting for as many pushes as the leases expect."""
        return rnd.next_step(self.leases.expected_pushes(self.replicas))

    def close(self, rnd: Round, timed_out: bool) -> set[str]:
        """Ends `rnd` (the shard then applies it). After a timeout the live learners that did
        not push are no longer waited for; returns them."""
        missing: set[str] = set()
        if timed_out:
            missing = self.leases.live() - set(rnd.clients)
            self.leases.revoke(missing)
            self.leases.stop_waiting_for_unseen()
        if self.current is rnd:
            self.current = None
        return missing
