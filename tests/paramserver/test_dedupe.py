"""The shard's table of idempotency keys (services/paramserver/dedupe.py), in-process."""

from __future__ import annotations

import pytest

from ba3c.v1 import paramserver_pb2 as pb
from services.paramserver.dedupe import Keys, KeyTooOld, Outcome


def test_a_repeated_key_finds_its_first_outcome_and_a_new_one_none():
    keys = Keys()
    assert keys.lookup("learner-0", "s", 1) is None
    keys.record("learner-0", "s", 1, Outcome(pb.APPLIED, 2))
    assert keys.lookup("learner-0", "s", 1) == Outcome(pb.APPLIED, 2)
    assert keys.lookup("learner-0", "s", 2) is None  # the next push
    assert keys.lookup("learner-0", "s", 9) is None  # a gap is a new push
    assert keys.lookup("learner-0", "other-session", 1) is None  # a restarted client
    assert keys.lookup("learner-1", "s", 1) is None


def test_no_key_is_never_stored():
    keys = Keys()
    keys.record("learner-0", "", 0, Outcome(pb.APPLIED, 0))
    assert keys.lookup("learner-0", "", 0) is None and len(keys) == 0


def test_an_older_sequence_without_a_kept_outcome_is_refused():
    keys = Keys(per_session=2)
    for sequence in (1, 2, 3, 5):
        keys.record("learner-0", "s", sequence, Outcome(pb.APPLIED, 0))
    assert keys.lookup("learner-0", "s", 5) is not None
    assert keys.lookup("learner-0", "s", 3) is not None
    for old in (1, 2, 4):  # forgotten (1, 2) or never handled (4)
        with pytest.raises(KeyTooOld, match="not newer than push 5"):
            keys.lookup("learner-0", "s", old)


def test_memory_is_bounded_per_session_and_in_sessions():
    keys = Keys(per_session=3, sessions=2)
    for session in ("a", "b", "c"):
        for sequence in range(1, 11):
            keys.record("learner-0", session, sequence, Outcome(pb.APPLIED, 0))
    assert len(keys) == 6  # 2 sessions of 3
    assert keys.lookup("learner-0", "a", 1) is None  # session a forgotten entirely
    assert keys.lookup("learner-0", "c", 10) is not None
