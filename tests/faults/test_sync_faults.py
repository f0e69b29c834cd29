"""A learner killed in sync mode (2 learners, replicas_to_aggregate 2): the shard must not
wait for it forever; the surviving learner keeps advancing within one --sync_timeout."""

from __future__ import annotations

import time

import pytest

from tests.faults.cluster import STARTUP_SECONDS, Cluster, random_moment
from tests.faults.summary import injected, recovered
from tests.support import wait_for

pytestmark = pytest.mark.slow  # real training runs, restarts import TensorFlow

GRACE = 5.0  # scheduling slack on a loaded 2-core machine


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cluster = Cluster(
        tmp_path_factory.mktemp("faults-sync"),
        ps=1,
        learners=2,
        pools=2,
        use_sync=True,
        replicas_to_aggregate=2,
    )
    cluster.start_all(shards=1, learners=2, pools=2, evaluator=False)
    try:
        cluster.wait_training()
        yield cluster
    finally:
        cluster.stop_all()


def test_a_killed_sync_learner_does_not_stop_the_other(run):
    sync_timeout = run.cfg.paramserver.sync_timeout
    with injected("sync", "learner SIGKILL (sync, 2 replicas) + restart", seed=21) as fault:
        run.wait_training()
        fault.injected_after_s = random_moment(21)
        before = run.progress()
        killed_at = run.kill("learner-1")
        # every round now waits for the dead learner until sync_timeout, then goes on
        gaps, last, at = [], before, killed_at
        for _ in range(3):
            last = run.wait_progress(
                last, sync_timeout + GRACE + 30, "the surviving learner to advance"
            )
            gaps.append(round(time.monotonic() - at, 2))
            at = time.monotonic()
        fault.details["seconds_between_versions_after_kill"] = gaps
        assert max(gaps) <= sync_timeout + GRACE, (
            f"versions came {gaps} s apart with sync_timeout {sync_timeout} s"
        )
        assert run.alive("learner-0")
        run.restart("learner-1")
        wait_for(
            lambda: run.metrics("learner-1").value("ba3c_learner_train_steps_total") > 2,
            STARTUP_SECONDS,
            "the restarted learner-1 to take part in rounds",
        )
        rejoined = run.progress()
        run.wait_progress(rejoined, 60, "versions with both learners again")
        recovered(fault, killed_at)
