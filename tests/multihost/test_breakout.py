"""Breakout across four hosts under real Slurm, in sync mode: two shards holding halves of
the fc kernel on ba3c-h1, two learners on ba3c-h2, a pool each on ba3c-h3 and ba3c-h4, the
recording evaluator on host 4. The learners ask for their parameters as bfloat16 (the
evaluator for float32, from the same shards). One job, shared by this module's tests in
order."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from services.learner import metrics as learner_metrics
from tests.multihost.job import H1, RunningJob, exposed, start_job, value_of
from tests.support import wait_for

pytestmark = pytest.mark.slow  # one shared job: over a minute for the module

LEARNERS = 2
RPC_TIMEOUT = 3.0
SYNC_TIMEOUT = 2.0
POLL = 0.25
BREAKOUT = [
    *("-e", "ALE/Breakout-v5", "--fc_splits", "2", "--batch_size", "16"),
    *("--simulator_procs", "4", "--record_node", "--eval_every", "5"),
    *("--eval_episodes", "1", "--eval_max_steps", "100", "--save_every", "0"),
    *("--params_dtype", "bfloat16"),
    *("--rpc_timeout", str(RPC_TIMEOUT), "--sync_timeout", str(SYNC_TIMEOUT)),
]
FAILURES = exposed(learner_metrics.PUSHPULL_FAILURES)
TRAIN_STEPS = exposed(learner_metrics.TRAIN_STEPS)
PUSHPULL_BYTES = exposed(learner_metrics.PUSHPULL_BYTES)


@pytest.fixture(scope="module")
def breakout(hosts, tmp_path_factory) -> Iterator[RunningJob]:
    job = start_job(hosts, tmp_path_factory.mktemp("breakout-hosts"), BREAKOUT, learners=LEARNERS)
    try:
        wait_for(
            lambda: all(job.metric("learner", TRAIN_STEPS, i) > 0 for i in range(LEARNERS)),
            180,
            "both learners on ba3c-h2 to train",
            interval=0.5,
        )
        yield job
    finally:
        for h in hosts.hosts:
            hosts.link(h, up=True)
        job.cancel()
        print(f"----- job output -----\n{job.output[-5000:]}")


def failures(job: RunningJob, learner: int) -> float:
    return job.metric("learner", FAILURES, learner)


def test_breakout_trains_the_split_fc_kernel_on_both_shards_in_bfloat16_and_records_a_video(
    breakout,
):
    statuses = wait_for(
        lambda: (s := [breakout.shard(k) for k in (0, 1)]) and all(x.version >= 3 for x in s) and s,
        120,
        "both shards to reach version 3",
        interval=0.5,
    )
    total = sum(s.num_parameters for s in statuses)
    # Nature CNN: the fc kernel is 1.6M of 1.69M parameters; split in two, each shard holds
    # about half. Unsplit, one shard would hold 95 %.
    assert all(s.num_parameters > 0.4 * total for s in statuses), statuses
    assert all(s.mode == statuses[0].mode for s in statuses)
    videos = wait_for(
        lambda: list((breakout.run_dir.path / "videos").glob("eval-*.mp4")),
        120,
        "a video from the evaluator on ba3c-h4",
        interval=0.5,
    )
    assert videos[0].stat().st_size > 0
    # float32 gradients out, bfloat16 parameters back: the replies are about half the
    # requests' bytes (float32 replies would be about the same size). Both counters from one
    # scrape: training goes on between two scrapes.
    for i in range(LEARNERS):
        page = breakout.exposition("learner", i)
        sent = value_of(page, PUSHPULL_BYTES, direction="sent")
        received = value_of(page, PUSHPULL_BYTES, direction="received")
        assert sent > 0 and 0.25 < received / sent < 0.6, (i, sent, received)


def train_step_interval(job: RunningJob, steps: int = 3) -> float:
    """Seconds per training step of the slower learner, over its next `steps` steps."""
    start = [job.metric("learner", TRAIN_STEPS, i) for i in range(LEARNERS)]
    began = time.monotonic()
    wait_for(
        lambda: all(
            job.metric("learner", TRAIN_STEPS, i) >= start[i] + steps for i in range(LEARNERS)
        ),
        120,
        f"{steps} more training steps of every learner",
        interval=POLL,
    )
    return (time.monotonic() - began) / steps


def test_shard_host_cut_off_in_sync_mode_no_learner_hangs_past_both_timeouts(hosts, breakout):
    # A learner that is computing a gradient (or gathering its batch) when the link goes
    # down starts its call only after that: allow two of its steps (measured now, on this
    # loaded machine: seconds in CI) before the call's own bound, sync_timeout +
    # rpc_timeout. A learner without deadlines would wait for the cut-off shards forever.
    step = train_step_interval(breakout)
    bound = SYNC_TIMEOUT + RPC_TIMEOUT + 2 * step
    before = [failures(breakout, i) for i in range(LEARNERS)]
    hosts.link(H1, up=False)
    cut = time.monotonic()
    try:
        gave_up: dict[int, float] = {}  # learner -> seconds after the cut

        def all_gave_up() -> bool:
            for i in range(LEARNERS):
                if i not in gave_up and failures(breakout, i) > before[i]:
                    gave_up[i] = time.monotonic() - cut
            return len(gave_up) == LEARNERS

        wait_for(all_gave_up, bound + 30, "both learners to give up a call", interval=POLL)
        waited = list(gave_up.values())
        # POLL and a second of slack for a loaded machine: a learner that waited for the
        # cut-off shards without its deadlines would take far longer (forever).
        assert max(waited) <= bound + POLL + 1.0, (waited, bound, step)
        steps = [breakout.metric("learner", TRAIN_STEPS, i) for i in range(LEARNERS)]
    finally:
        hosts.link(H1, up=True)
    versions = [breakout.shard(k).version for k in (0, 1)]
    wait_for(
        lambda: (
            all(breakout.shard(k).version > versions[k] for k in (0, 1))
            and all(breakout.metric("learner", TRAIN_STEPS, i) > steps[i] for i in range(LEARNERS))
        ),
        60,
        "both learners to train and both shards to advance again",
        interval=0.5,
    )
    print(f"learners gave up on the cut-off shards after {[round(w, 1) for w in waited]} s")
