"""Exactly-once pushes against a real `ba3c paramserver`: a push retried after its reply was
lost (a shard frozen with SIGSTOP past the client's deadline) is applied once and its env
frames are counted once; a key sent twice over gRPC gets the first outcome back."""

from __future__ import annotations

import signal
import threading

import grpc
import numpy as np
import pytest

from ba3c import rpc, tensors
from ba3c.paramserver_client import Hooks, ParamServerClient
from ba3c.sharding import Assignment
from ba3c.v1 import paramserver_pb2 as pb
from tests.paramserver.support import (
    SHAPES,
    Client,
    gradients,
    initial_values,
    metric,
    refused,
    start_shard,
)
from tests.support import wait_for

LR = 0.5  # sgd: one application of g moves the parameters by exactly -LR * g
DEADLINE = 1.0  # the client's rpc_timeout


def learner(run_dir, stop: threading.Event, failures: list[str]) -> ParamServerClient:
    """The learners' real client, with a short deadline, initializing the shard."""
    client = ParamServerClient(
        run_dir,
        run_dir.read_secret(),
        Assignment(list(SHAPES.items()), 1),
        "learner-0",
        pb.LEARNER,
        stop,
        rpc_timeout=DEADLINE,
        max_message_bytes=rpc.message_limit(16),
        hooks=Hooks(failed=failures.append),
    )
    client.connect()
    client.initialize(initial_values())
    client.wait_initialized()
    return client


def push_in_background(
    client: ParamServerClient, grads, frames: int
) -> tuple[dict, threading.Thread]:
    out: dict = {}

    def push() -> None:
        try:
            out["parameters"] = client.push_pull(grads, frames, 32)
        except BaseException as e:  # reported by the test
            out["error"] = e

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    return out, thread


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_push_retried_after_a_frozen_shard_is_applied_once(mode, run_dir_factory, processes):
    """sync: the first attempt waits in its round (of two) when the shard freezes past the
    client's deadline; after SIGCONT a second learner fills the round, so the first attempt
    is applied after the client gave up on it: its retries must get its outcome, not a
    second application. async: the shard freezes before the push arrives (gRPC may or may
    not run the abandoned first attempt after SIGCONT)."""
    knobs = dict(optimizer="sgd", lr=LR, lease_seconds=60.0)
    if mode == "sync":
        knobs.update(use_sync=True, replicas_to_aggregate=2, sync_timeout=60.0)
    run_dir = run_dir_factory(**knobs)
    shard, _ = start_shard(processes, run_dir)
    stop, failures = threading.Event(), []
    client = learner(run_dir, stop, failures)
    grads = gradients(0)
    try:
        if mode == "async":
            shard.signal(signal.SIGSTOP)
        out, thread = push_in_background(client, grads, frames=100)
        if mode == "sync":
            wait_for(
                lambda: metric(run_dir, "ba3c_paramserver_round_waiting_pushes") == 1,
                30,
                "the push to wait in its round",
            )
            shard.signal(signal.SIGSTOP)
        failed_before = len(failures)
        wait_for(
            lambda: "DEADLINE_EXCEEDED" in failures[failed_before:],
            30,
            "a deadline to pass while the shard is frozen",
        )
    finally:
        shard.signal(signal.SIGCONT)
    expected, frames, pushes = {n: v - LR * grads[n] for n, v in initial_values().items()}, 100, 1
    if mode == "sync":  # learner-1 fills the round: it is applied with both pushes in it
        other = gradients(1)
        Client(run_dir, client_id="learner-1").push(0, other, env_frames=7)
        expected = {n: v - LR * (grads[n] + other[n]) / 2 for n, v in initial_values().items()}
        frames, pushes = 107, 2
    thread.join(60)
    assert "parameters" in out, f"push_pull did not return: {out.get('error')!r}"

    status = Client(run_dir, client_id="observer").status()
    print(f"{mode}: failed attempts {failures}, pushes repeated {status.pushes_repeated}")
    assert status.version == 1 and status.pushes_applied == pushes, "applied more than once"
    assert status.env_frames == frames, "env frames counted more than once"
    assert client.version == 1
    for name, value in expected.items():
        np.testing.assert_allclose(out["parameters"][name], value, atol=1e-6)
    if mode == "sync":  # the first attempt was in the round: the retry was answered by key
        assert status.pushes_repeated >= 1
        assert metric(run_dir, "ba3c_paramserver_pushes_repeated_total") >= 1
    stop.set()
    client.close()


def push(client: Client, sequence: int, session: str = "s", frames: int = 10, version: int = 0):
    return client.stub.PushPull(
        pb.PushPullRequest(
            client_id=client.client_id,
            version=version,
            env_frames=frames,
            gradients=tensors.encode_named(gradients(sequence, 0.1)),
            session=session,
            sequence=sequence,
        ),
        timeout=30,
    )


def test_a_key_sent_twice_gets_the_first_outcome_and_is_applied_once(run_dir_factory, processes):
    run_dir = run_dir_factory(optimizer="sgd", lr=LR)
    start_shard(processes, run_dir)
    client = Client(run_dir)
    client.register()
    client.initialize(initial_values())

    first, again = push(client, 1), push(client, 1)
    assert (first.outcome, first.version, first.env_frames, first.repeated) == (
        pb.APPLIED,
        1,
        10,
        False,
    )
    assert (again.outcome, again.version, again.env_frames, again.repeated) == (
        pb.APPLIED,
        1,
        10,
        True,
    )
    assert tensors.decode_named(again.parameters).keys() == SHAPES.keys()
    status = client.status()
    assert (status.version, status.pushes_applied, status.env_frames) == (1, 1, 10)
    assert status.pushes_repeated == 1

    # a gap is a new push; an older sequence never handled is refused and changes nothing
    assert push(client, 3, version=1).version == 2
    error = refused(lambda: push(client, 2, version=2))
    assert error.code() == grpc.StatusCode.ABORTED
    assert "not newer than push 3" in error.details()
    # a new session (a restarted client) starts its own sequence; no key: never deduplicated
    assert push(client, 1, session="restarted", version=2).version == 3
    assert push(client, 0, session="", version=3).version == 4
    assert push(client, 0, session="", version=4).version == 5
    status = client.status()
    assert (status.version, status.pushes_applied, status.env_frames) == (5, 5, 50)
    client.close()
