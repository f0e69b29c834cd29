"""The learner under trouble: a shard that goes away and comes back, bad command lines."""

from __future__ import annotations

import signal

import pytest

from tests.learner.cluster import CARTPOLE, metric
from tests.support import wait_for


@pytest.mark.slow
def test_a_lost_shard_is_retried_and_training_resumes_when_it_returns(run_dir_factory, processes):
    run_dir = run_dir_factory(**CARTPOLE, rpc_timeout=3.0)
    shard = processes("paramserver", "paramserver", "--run-dir", str(run_dir.path))
    learner = processes("learner", "learner", "--run-dir", str(run_dir.path))
    processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    wait_for(
        lambda: metric(run_dir, "ba3c_learner_train_steps_total") >= 3, 120, "3 training steps"
    )

    shard.signal(signal.SIGKILL)  # gone without a word, and without a final checkpoint
    shard.popen.wait(10)
    run_dir.remove_address("paramserver", 0)
    wait_for(
        lambda: (
            metric(run_dir, "ba3c_learner_pushpull_failures_total", code="DEADLINE_EXCEEDED")
            + metric(run_dir, "ba3c_learner_pushpull_failures_total", code="UNAVAILABLE")
            # cancelled by the client when the shard's address file went away
            + metric(run_dir, "ba3c_learner_pushpull_failures_total", code="CANCELLED")
            >= 1
        ),
        60,
        "a PushPull failure to be counted",
    )
    log = run_dir.log_path("learner", 0)
    wait_for(
        lambda: "shard unreachable, retrying" in log.read_text(),
        30,
        "the learner to log the outage",
    )
    assert learner.alive()
    steps = metric(run_dir, "ba3c_learner_train_steps_total")

    processes("paramserver-again", "paramserver", "--run-dir", str(run_dir.path))
    wait_for(
        lambda: metric(run_dir, "ba3c_learner_train_steps_total") >= steps + 3,
        120,
        "training to resume on the restarted shard",
    )
    assert learner.alive()


def test_a_bad_flag_is_one_line_and_exit_code_2(run_dir_factory, processes):
    run_dir = run_dir_factory()
    p = processes("learner", "learner", "--run-dir", str(run_dir.path), "--batch_size", "x")
    assert p.popen.wait(60) == 2
    assert "batch_size" in p.output() and "Traceback" not in p.output()


def test_an_unknown_environment_is_one_line_and_exit_code_2(run_dir_factory, processes):
    run_dir = run_dir_factory(env="NoSuchGame-v9")
    p = processes("learner", "learner", "--run-dir", str(run_dir.path))
    assert p.popen.wait(60) == 2
    out = p.output()
    assert "NoSuchGame-v9" in out and "Traceback" not in out


def test_a_second_learner_waits_for_learner_0_to_initialize_the_shards(run_dir_factory, processes):
    run_dir = run_dir_factory(**CARTPOLE, learners=2)
    processes("paramserver", "paramserver", "--run-dir", str(run_dir.path))
    second = processes("learner-1", "learner", "--run-dir", str(run_dir.path), "--index", "1")
    log = run_dir.log_path("learner", 1)
    wait_for(
        lambda: "registered with shard" in log.read_text(),
        120,
        "learner 1 to register with the shard",
    )
    assert run_dir.read_address("learner", 1) is None, "learner 1 served without parameters"
    assert second.alive()
    processes("learner-0", "learner", "--run-dir", str(run_dir.path), "--index", "0")
    wait_for(lambda: run_dir.read_address("learner", 0), 120, "learner 0 to serve")
    wait_for(
        lambda: run_dir.read_address("learner", 1),
        60,
        "learner 1 to serve once the shard is initialized",
    )
    assert '"event": "initialize"' not in log.read_text(), "learner 1 initialized a shard"
