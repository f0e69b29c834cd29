"""Sync mode against real processes: learners in lock-step, and a learner that dies."""

from __future__ import annotations

import json
import signal
import time

import grpc
import numpy as np

from ba3c import tensors
from ba3c.v1 import paramserver_pb2 as pb
from tests.paramserver.support import (
    SHAPES,
    Client,
    client_command,
    gradients,
    initial_values,
    metric,
    start_shard,
)
from tests.support import wait_for


def replies(proc) -> list[dict]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def test_two_learners_advance_in_lock_step_and_one_dead_learner_costs_one_timeout(
    run_dir_factory, processes
):
    run_dir = run_dir_factory(
        use_sync=True, replicas_to_aggregate=2, sync_timeout=2.0, lease_seconds=60.0
    )
    start_shard(processes, run_dir)
    a = processes("learner-a", *client_command(run_dir, "learner-a", "--initialize"), raw=True)
    b = processes("learner-b", *client_command(run_dir, "learner-b"), raw=True)
    status = Client(run_dir, client_id="observer")

    # lock-step: every version is one average of both learners' pushes
    wait_for(lambda: status.status().version >= 20, 60, "20 sync versions")
    assert metric(run_dir, "ba3c_paramserver_round_timeouts_total") == 0
    for proc in (a, b):
        seen = replies(proc)
        assert all(r["outcome"] == "APPLIED" and r["version"] == r["sent"] + 1 for r in seen)
    s = status.status()
    assert s.mode == pb.SYNC and s.live_learners == 2 and s.pushes_dropped == 0
    assert s.pushes_applied in (2 * s.version, 2 * s.version - 1)  # one round may be half-full

    # a learner dies: the other waits for it once, then goes on alone
    b.kill()
    killed_at = time.time()
    version_at_kill = status.status().version
    wait_for(
        lambda: status.status().version >= version_at_kill + 30,
        60,
        "the surviving learner to advance 30 versions alone",
    )
    after = [r for r in replies(a) if r["t"] > killed_at]
    gaps = np.diff([killed_at] + [r["t"] for r in after])
    assert metric(run_dir, "ba3c_paramserver_round_timeouts_total") == 1
    assert (gaps > 1.0).sum() == 1, f"expected exactly one wait of a timeout, gaps {gaps}"
    assert gaps.max() < 2.0 + 3.0, "the wait must be about one sync_timeout"
    assert status.status().live_learners == 1
    status.close()


def test_stale_and_surplus_pushes_are_dropped_but_answered(run_dir_factory, processes):
    run_dir = run_dir_factory(use_sync=True, replicas_to_aggregate=1, optimizer="sgd")
    start_shard(processes, run_dir)
    client = Client(run_dir)
    client.register()
    client.initialize(initial_values())
    first, _ = client.push(0, gradients(0))
    assert first.outcome == pb.APPLIED and first.version == 1
    stale, params = client.push(0, gradients(1))
    assert stale.outcome == pb.DROPPED_STALE and stale.version == 1 and stale.staleness == 1
    assert set(params) == set(SHAPES)
    status = client.status()
    assert (status.version, status.pushes_applied, status.pushes_dropped) == (1, 1, 1)
    client.close()


def test_sync_round_averages_the_pushes_and_answers_every_caller(run_dir_factory, processes):
    run_dir = run_dir_factory(
        use_sync=True, replicas_to_aggregate=3, optimizer="sgd", lr=1.0, sync_timeout=30.0
    )
    start_shard(processes, run_dir)
    clients = [Client(run_dir, client_id=f"learner-{i}") for i in range(3)]
    for c in clients:
        c.register()
    clients[0].initialize(initial_values())
    futures = [
        c.stub.PushPull.future(
            pb.PushPullRequest(
                client_id=c.client_id, version=0, gradients=tensors.encode_named(gradients(i))
            ),
            timeout=60,
        )
        for i, c in enumerate(clients)
    ]
    results = [f.result() for f in futures]
    assert {r.version for r in results} == {1}
    assert len({r.parameters[0].tensor.data for r in results}) == 1
    _, params = clients[0].pull()
    mean = {n: np.mean([gradients(i)[n] for i in range(3)], axis=0) for n in SHAPES}
    for n in SHAPES:
        np.testing.assert_allclose(params[n], initial_values()[n] - mean[n], rtol=1e-5, atol=1e-6)
    assert metric(run_dir, "ba3c_paramserver_round_pushes_sum") == 3
    for c in clients:
        c.close()


def test_sigterm_answers_waiting_callers_and_writes_a_final_checkpoint(run_dir_factory, processes):
    run_dir = run_dir_factory(
        use_sync=True, replicas_to_aggregate=2, sync_timeout=60.0, save_every=0
    )
    proc, _ = start_shard(processes, run_dir)
    client = Client(run_dir)
    client.register()
    Client(run_dir, client_id="learner-1").register()
    client.initialize(initial_values())
    waiting = client.stub.PushPull.future(
        pb.PushPullRequest(
            client_id="learner-0", version=0, gradients=tensors.encode_named(gradients(0))
        ),
        timeout=60,
    )
    wait_for(
        lambda: metric(run_dir, "ba3c_paramserver_round_waiting_pushes") == 1,
        10,
        "the push to wait in its round",
    )
    proc.signal(signal.SIGTERM)
    reply = waiting.result(timeout=20)
    assert reply.version == 1 and reply.outcome == pb.APPLIED
    assert proc.popen.wait(30) == 0
    assert run_dir.read_address("paramserver", 0) is None
    assert "final checkpoint" in proc.output()
    assert (run_dir.checkpoints(0) / "ckpt-000000000001.ckpt").exists()
    try:
        client.stub.Status(pb.StatusRequest(), timeout=1)
        raise AssertionError("the shard still answers")
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    client.close()


def test_too_many_replicas_cost_one_timeout_not_one_per_round(run_dir_factory, processes):
    run_dir = run_dir_factory(use_sync=True, replicas_to_aggregate=3, sync_timeout=1.0)
    start_shard(processes, run_dir)
    client = Client(run_dir)
    client.register()
    client.initialize(initial_values())
    started = time.monotonic()
    version = 0
    for i in range(10):
        reply, _ = client.push(version, gradients(i))
        assert reply.outcome == pb.APPLIED and reply.version == version + 1
        version = reply.version
    assert time.monotonic() - started < 1.0 + 4.0
    assert metric(run_dir, "ba3c_paramserver_round_timeouts_total") == 1
    client.close()
