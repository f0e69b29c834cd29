"""slurm/hetjob.sh running the real services on Breakout (Nature CNN, 2 shards) under a real
Slurm. A Prometheus outside the job finds every process through RUN_DIR/targets/ (file_sd on
the shared run directory, as a site's Prometheus on a login node would), and
`scancel --batch --signal=USR1` (what the time limit's --signal sends) stops the run in
order: the final checkpoint of each shard holds that shard's last version."""

from __future__ import annotations

from datetime import datetime

import pytest

from ba3c.tools import monitor
from tests.monitoring.prom import PrometheusAPI
from tests.slurm.cluster import wait_for_job_end
from tests.slurm.hetjob import components, submit
from tests.slurm.test_hetjob_cartpole import SHARDS, env_for, log_events, newest_checkpoints
from tests.support import wait_for

BREAKOUT = [
    "--env",
    "ALE/Breakout-v5",
    "--model",
    "nature",
    "--no-record_node",
    "--simulator_procs",
    "2",
    "--batch_size",
    "32",
    "--eval_every",
    "600",
    "--eval_episodes",
    "1",
    "--eval_max_steps",
    "100",
    # no periodic checkpoints: the only ones are written by the stop
    "--save_every",
    "0",
]
PROCESSES = {("paramserver", "0"), ("paramserver", "1"), ("learner", "0")} | {
    ("simulator", "0"),
    ("evaluator", "0"),
}


def when(record: dict) -> datetime:
    return datetime.fromisoformat(record["timestamp"])


@pytest.mark.slow
def test_breakout_found_by_prometheus_and_stopped_in_order_with_last_version_saved(slurm, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "targets").mkdir(parents=True)
    config = monitor.config_for_runs([run_dir], scrape_interval="1s")
    prometheus = monitor.LocalPrometheus(config, tmp_path / "prometheus").start()
    try:
        prometheus.wait_ready(30)
        api = PrometheusAPI(prometheus.url)
        job = submit(
            slurm,
            tmp_path / "job.out",
            components(ps=SHARDS, learners=1, pools=1),
            env_for(run_dir, "0"),
            args=BREAKOUT,
            wait=False,
        )
        wait_for(
            lambda: (
                {
                    (t["labels"]["role"], t["labels"]["index"])
                    for t in api.active_targets()
                    if t["health"] == "up"
                }
                >= PROCESSES
            ),
            240,
            "Prometheus to scrape every process of the job through RUN_DIR/targets/",
            interval=1,
        )
        wait_for(
            lambda: (
                (v := api.values("ba3c_paramserver_version"))
                and len(v) == SHARDS
                and min(v.values()) >= 2
            ),
            240,
            "both shards to reach version 2 (the learner trains)",
            interval=1,
        )
        slurm.run("scancel", "--batch", "--signal=USR1", job.job_id)
        assert wait_for_job_end(slurm, job.job_id, 180) == "COMPLETED", job.output[-6000:]
    finally:
        prometheus.stop()
    assert "stopping (USR1" in job.output, job.output[-6000:]
    assert "FAILED: component" not in job.output, job.output[-6000:]

    saved = newest_checkpoints(run_dir)
    learner_stopped = when(log_events(run_dir, "learner-0", "stopping")[-1])
    for k in range(SHARDS):
        name = f"paramserver-{k}"
        last = log_events(run_dir, name, "stopped")[-1]["version"]
        assert saved[k].version == last >= 2, (k, saved[k].version, last)
        final = log_events(run_dir, name, "final checkpoint")[-1]
        assert final["version"] == last
        # The shards began to stop only after the learner had stopped pushing.
        assert when(log_events(run_dir, name, "shutting down")[-1]) >= learner_stopped
