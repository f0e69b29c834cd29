"""Exactly-once pushes: the outcomes of recent idempotency keys, per client session.

A PushPull may carry a key (client_id, session, sequence) (see PushPullRequest in
protos/ba3c/v1/paramserver.proto). The shard records the outcome of every push it handles
under its key, before applying it, and answers a later attempt with the same key from here
instead of applying the gradient again. Memory is bounded: the newest `per_session`
sequences of each session, and the `sessions` sessions that pushed most recently. Not
thread-safe: the shard's lock guards it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from services.paramserver.sync import Round

PER_SESSION = 64
SESSIONS = 1024


class KeyTooOld(ValueError):
    """A sequence at or below the newest handled one whose outcome is not kept."""


@dataclass
class Outcome:
    """What the first attempt of a key got."""

    outcome: int  # pb.PushOutcome
    staleness: int
    round: Round | None = None  # sync: the round the push joined; done once it is applied

    @property
    def settled(self) -> bool:
        return self.round is None or self.round.done


class _Session:
    def __init__(self) -> None:
        self.newest = 0
        self.outcomes: OrderedDict[int, Outcome] = OrderedDict()


class Keys:
    """(client_id, session) -> the outcomes of its newest sequences."""

    def __init__(self, per_session: int = PER_SESSION, sessions: int = SESSIONS):
        self.per_session = per_session
        self.sessions = sessions
        self._sessions: OrderedDict[tuple[str, str], _Session] = OrderedDict()

    def lookup(self, client_id: str, session: str, sequence: int) -> Outcome | None:
        """The stored outcome of a repeated key; None for a push to handle (no key, or a
        new one). Raises KeyTooOld for an old sequence whose outcome is not kept."""
        if sequence == 0:
            return None
        found = self._sessions.get((client_id, session))
        if found is None:
            return None
        self._sessions.move_to_end((client_id, session))
        outcome = found.outcomes.get(sequence)
        if outcome is not None:
            return outcome
        if sequence <= found.newest:
            raise KeyTooOld(
                f"push {sequence} of session {session!r} of {client_id!r} is not newer than "
                f"push {found.newest}, and its outcome is not kept (the newest "
                f"{self.per_session} are): refused, nothing applied; pull and push again"
            )
        return None

    def record(self, client_id: str, session: str, sequence: int, outcome: Outcome) -> None:
        """Stores the outcome of a push being handled (no-op without a key)."""
        if sequence == 0:
            return
        key = (client_id, session)
        found = self._sessions.get(key)
        if found is None:
            found = self._sessions[key] = _Session()
            while len(self._sessions) > self.sessions:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        found.outcomes[sequence] = outcome
        found.newest = max(found.newest, sequence)
        while len(found.outcomes) > self.per_session:
            found.outcomes.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(s.outcomes) for s in self._sessions.values())
