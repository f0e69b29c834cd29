"""Learner leases: which learners a sync-mode shard may still wait for.

A learner's lease starts with `Register` and is renewed by every call it makes. A learner
that makes no call for `lease_seconds`, or that missed a sync round which then timed out,
is no longer live, so the shard stops waiting for it; its next call makes it live again.
This is what keeps a dead learner from costing more than one `sync_timeout`. Until the
first round times out, learners not seen yet count as coming (they may still be starting);
after it, only live learners do, so too large a replicas_to_aggregate also costs one
timeout, not one per round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class Leases:
    """client_id -> time of its last call. Not thread-safe: the shard's lock guards it."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._last: dict[str, float] = {}
        self._revoked: set[str] = set()
        self._wait_for_unseen = True

    def renew(self, client_id: str) -> None:
        self._last[client_id] = self._clock()
        self._revoked.discard(client_id)

    def revoke(self, client_ids: Iterable[str]) -> None:
        """Stops counting these learners as live until they call again."""
        self._revoked.update(c for c in client_ids if c in self._last)

    def stop_waiting_for_unseen(self) -> None:
        """After a timed-out round: learners never seen so far are not coming (yet); a
        learner that registers later counts again through its lease."""
        self._wait_for_unseen = False

    def live(self) -> set[str]:
        now = self._clock()
        return {
            c for c, t in self._last.items() if now - t <= self.seconds and c not in self._revoked
        }

    @property
    def known(self) -> int:
        """Learners that ever called, live or not."""
        return len(self._last)

    def expected_pushes(self, replicas: int) -> int:
        """How many pushes a sync round should wait for: `replicas`, less the learners
        known to be gone. Learners not seen yet still count (they may be starting up)."""
        not_seen_yet = max(0, replicas - self.known) if self._wait_for_unseen else 0
        return max(1, min(replicas, len(self.live()) + not_seen_yet))
