"""Faults injected into one running async training (1 shard, 2 learners, 2 pools, evaluator).

Each test waits until the run trains, injects its fault at a random moment (a fixed seed
per case, so a failure reproduces), and checks that training goes on: versions advance,
frames flow, and nothing is lost beyond what the design allows. The tests share one run
to keep the suite short; each starts from "the run trains" and leaves it training.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ba3c import checkpoint
from tests.faults.cluster import STARTUP_SECONDS, Cluster, Progress, random_moment
from tests.faults.summary import injected, recovered
from tests.support import wait_for

pytestmark = pytest.mark.slow  # real training runs, restarts import TensorFlow

CASE = "async"


def mount_small_tmpfs(path, size: str = "1m") -> bool:
    """A tiny file system for the shard's checkpoints, so the test can fill it up."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("faults-async"), ps=1, learners=2, pools=2)
    ckpt_dir = cluster.run_dir.checkpoints(0)
    cluster.small_disk = mount_small_tmpfs(ckpt_dir)
    cluster.start_all(shards=1, learners=2, pools=2, evaluator=True)
    try:
        cluster.wait_training()
        yield cluster
    finally:
        cluster.stop_all()
        if cluster.small_disk:
            subprocess.run(["umount", "-l", str(ckpt_dir)], check=False)


def test_a_killed_simulator_pool_is_restarted_and_frames_flow_again(run):
    with injected(CASE, "simulator pool SIGKILL + restart", seed=11) as fault:
        run.wait_training()
        fault.injected_after_s = random_moment(11)
        before = run.progress()
        killed_at = run.kill("simulator-0")
        # the other pool keeps the run going while this one is down
        run.wait_progress(before, 60, "training to go on without simulator-0")
        run.restart("simulator-0")
        wait_for(
            lambda: run.metrics("simulator-0").value("ba3c_simulator_env_frames_total") > 0,
            120,
            "the restarted pool to step its environments",
        )
        wait_for(
            lambda: run.metrics("learner-0").value("ba3c_learner_pools_connected") == 1,
            60,
            "learner-0 to serve the restarted pool",
        )
        after = run.progress()
        run.wait_progress(after, 60, "versions and frames after the restart")
        recovered(fault, killed_at)


def test_a_killed_evaluator_is_restarted_and_evaluates_again(run):
    with injected(CASE, "evaluator SIGKILL + restart", seed=12) as fault:
        wait_for(lambda: run.evaluations() >= 1, 120, "a first evaluation")
        fault.injected_after_s = random_moment(12)
        before = run.progress()
        killed_at = run.kill("evaluator-0")
        seen = run.evaluations()
        run.wait_progress(before, 60, "training to go on without the evaluator")
        run.restart("evaluator-0")
        wait_for(
            lambda: run.evaluations() > seen,
            STARTUP_SECONDS,
            "an evaluation by the restarted evaluator",
        )
        recovered(fault, killed_at)


def test_a_killed_async_learner_leaves_the_other_training_and_rejoins(run):
    timeout = run.cfg.net.rpc_timeout
    with injected(CASE, "learner SIGKILL (async) + restart", seed=13) as fault:
        run.wait_training()
        fault.injected_after_s = random_moment(13)
        before = run.progress()
        killed_at = run.kill("learner-1")
        run.wait_progress(before, 3 * timeout + 30, "learner-0 to keep advancing")
        fault.details["other_learner_advanced_s"] = round(time.monotonic() - killed_at, 2)
        run.restart("learner-1")
        wait_for(
            lambda: run.metrics("learner-1").value("ba3c_learner_train_steps_total") > 0,
            STARTUP_SECONDS,
            "the restarted learner-1 to train",
        )
        wait_for(
            lambda: run.metrics("learner-1").value("ba3c_learner_pools_connected") == 1,
            60,
            "simulator-1 to find the restarted learner-1",
        )
        recovered(fault, killed_at)
        assert run.alive("simulator-1") and run.alive("learner-0")


def test_a_paramserver_frozen_past_the_learners_deadline_is_waited_for(run):
    deadline = run.cfg.net.rpc_timeout
    with injected(CASE, f"paramserver SIGSTOP {2 * deadline + 2:.0f} s, SIGCONT", seed=14) as fault:
        run.wait_training()
        fault.injected_after_s = random_moment(14)
        failures = run.metrics("learner-0").value("ba3c_learner_pushpull_failures_total")
        before = run.progress()
        run.freeze("paramserver-0")
        try:
            time.sleep(2 * deadline + 2)  # the fault itself: frozen longer than a deadline
            assert run.progress() is None, "a stopped shard answered"
        finally:
            run.thaw("paramserver-0")
        thawed_at = time.monotonic()
        # the pushes queued during the freeze land at once; then fresh ones must follow
        queued = run.wait_progress(before, 60, "the queued pushes after SIGCONT")
        run.wait_progress(queued, 60, "fresh pushes after SIGCONT")
        recovered(fault, thawed_at)
        for name in ("learner-0", "learner-1", "simulator-0", "simulator-1", "paramserver-0"):
            assert run.alive(name), f"{name} died while the shard was frozen"
        seen = run.metrics("learner-0").value("ba3c_learner_pushpull_failures_total")
        fault.details["learner_call_failures"] = seen - failures
        assert seen > failures, "the learner never noticed the frozen shard"


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint_valid(run):
    if not run.small_disk:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    every = run.cfg.paramserver.save_every
    folder = run.run_dir.checkpoints(0)
    filler = folder / "filler"
    with injected(CASE, "disk full while checkpointing", seed=15) as fault:
        wait_for(
            lambda: (s := run.status()) and s.checkpoint_version >= 0, 120, "a first checkpoint"
        )
        fault.injected_after_s = random_moment(15)
        with open(filler, "wb") as f:  # take every free byte
            free = os.statvfs(folder)
            f.write(b"\0" * (free.f_bavail * free.f_frsize))
        full_at = run.progress()
        wait_for(
            lambda: "checkpoint write failed" in run.log("paramserver-0"),
            60,
            "a checkpoint write to fail",
        )
        # training goes on although no checkpoint can be written
        run.wait_progress(
            Progress(full_at.version + 2 * every, full_at.env_frames),
            120,
            f"{2 * every} more versions on a full disk",
        )
        assert run.alive("paramserver-0")
        kept = checkpoint.newest(folder)  # verifies the checksums
        assert kept is not None, "no valid checkpoint left on the full disk"
        assert kept.version <= full_at.version + every
        assert run.status().checkpoint_version == kept.version
        assert not list(folder.glob(".ckpt-*.tmp")), "a partial checkpoint was left behind"
        fault.details["kept_checkpoint_version"] = kept.version
        filler.unlink()
        freed_at = time.monotonic()
        wait_for(
            lambda: run.status().checkpoint_version > kept.version,
            60,
            "checkpoints to be written again once there is space",
        )
        recovered(fault, freed_at)


def test_a_killed_paramserver_restarts_from_its_newest_checkpoint(run):
    every = run.cfg.paramserver.save_every
    with injected(CASE, "paramserver SIGKILL + restart", seed=16) as fault:
        run.wait_training()
        wait_for(lambda: (s := run.status()) and s.checkpoint_version >= 0, 120, "a checkpoint")
        fault.injected_after_s = random_moment(16)
        last = run.status()
        killed_at = run.kill("paramserver-0")
        on_disk = checkpoint.newest(run.run_dir.checkpoints(0))
        assert on_disk is not None and on_disk.version >= last.checkpoint_version
        steps = {
            n: run.metrics(n).value("ba3c_learner_train_steps_total")
            for n in ("learner-0", "learner-1")
        }
        run.restart("paramserver-0")
        restored = wait_for(
            lambda: (s := run.status()) and s.initialized and s, 60, "the restarted shard to serve"
        )
        # it resumed from the newest checkpoint: no version went back past it
        assert restored.checkpoint_version == on_disk.version
        assert restored.version >= on_disk.version
        assert restored.env_frames >= on_disk.env_frames > 0
        lost = last.version - on_disk.version
        fault.details.update(
            version_at_kill=last.version, resumed_from=on_disk.version, versions_lost=lost
        )
        assert lost <= 3 * every, f"lost {lost} versions with a checkpoint every {every}"
        run.wait_progress(
            Progress(restored.version, restored.env_frames),
            120,
            "versions and frames after the restart",
        )
        recovered(fault, killed_at)
        for name, before in steps.items():
            wait_for(
                lambda n=name, b=before: (
                    run.metrics(n).value("ba3c_learner_train_steps_total") > b + 2
                ),
                60,
                f"{name} to push to the restarted shard",
            )
