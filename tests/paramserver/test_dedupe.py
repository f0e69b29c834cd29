"""Exactly-once pushes in-process: the table of idempotency keys
(services/paramserver/dedupe.py), the key on the wire, and a Shard in sync mode."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from ba3c import tensors
from ba3c.v1 import paramserver_pb2 as pb
from services.paramserver.dedupe import Keys, KeyTooOld, Outcome
from services.paramserver.optimizers import Hyper
from services.paramserver.servicer import parse_push_request
from services.paramserver.shard import PushResult, Settings, Shard
from tests.paramserver.support import gradients, initial_values
from tests.support import wait_for


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


def _raw(grads) -> list:
    data = pb.PushPullRequest(gradients=tensors.encode_named(grads)).SerializeToString()
    return parse_push_request(data).gradients


def _inside(thread: threading.Thread, function: str) -> bool:
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_the_key_survives_the_request_parser():
    data = pb.PushPullRequest(client_id="a", session="s", sequence=(1 << 64) - 1)
    parsed = parse_push_request(data.SerializeToString())
    assert (parsed.message.session, parsed.message.sequence, parsed.error) == (
        "s",
        (1 << 64) - 1,
        "",
    )


def test_a_repeat_while_the_first_attempt_waits_in_its_round_waits_and_is_not_applied():
    """In-process Shard, sync mode, a round of two: learner a's push and its repeat both
    wait; learner b's push closes the round; a's gradient counts once."""
    shard = Shard(
        Settings(sync=True, replicas=2, sync_timeout=60, hyper=Hyper(optimizer="sgd", lr=1.0))
    )
    shard.initialize("a", tensors.encode_named(initial_values()))
    results: dict[str, PushResult] = {}

    def push(name: str, client: str, seed: int) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: results.__setitem__(
                name, shard.push(client, 0, _raw(gradients(seed)), 10, "s", 1)
            ),
            daemon=True,
        )
        thread.start()
        wait_for(lambda: _inside(thread, "_await_round") or not thread.is_alive(), 10, name)
        return thread

    first, repeat = push("first", "a", 0), push("repeat", "a", 0)
    assert first.is_alive() and repeat.is_alive(), "answered before the round was full"
    push("b", "b", 1).join(10)
    first.join(10), repeat.join(10)
    replies = {n: pb.PushPullResponse.FromString(r.reply) for n, r in results.items()}
    assert {n: (r.outcome, r.version, r.repeated) for n, r in replies.items()} == {
        "first": (pb.APPLIED, 1, False),
        "repeat": (pb.APPLIED, 1, True),
        "b": (pb.APPLIED, 1, False),
    }
    status = shard.status()
    assert (status.version, status.pushes_applied, status.env_frames) == (1, 2, 20)
    assert status.pushes_repeated == 1
    expected = {n: v - (gradients(0)[n] + gradients(1)[n]) / 2 for n, v in initial_values().items()}
    got = tensors.decode_named(replies["b"].parameters)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-6)
