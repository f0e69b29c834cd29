"""slurm/hetjob.sh running the real services on CartPole under a real Slurm: a bounded run
ends by itself with exit 0; `scancel` leaves verified checkpoints that a resubmission on the
same run directory resumes from."""

from __future__ import annotations

import json

from ba3c import checkpoint
from ba3c.rundir import RunDir
from tests.slurm.cluster import wait_for_job_end
from tests.slurm.hetjob import components, real_ba3c, submit
from tests.support import wait_for

SMALL_RUN = [
    "--env",
    "CartPole-v1",
    "--no-record_node",
    "--eval_every",
    "5",
    "--eval_episodes",
    "2",
    "--simulator_procs",
    "4",
    "--batch_size",
    "32",
]
SHARDS = 2
COUNTS = components(ps=SHARDS, learners=1, pools=1)


def env_for(run_dir, minutes: str) -> dict[str, str]:
    return {
        "BA3C_BIN": real_ba3c(),
        "BA3C_CONTAINER": "none",
        "BA3C_RUN_DIR": str(run_dir),
        "BA3C_MINUTES": minutes,
    }


def evaluations(run_dir) -> list[dict]:
    return RunDir(run_dir).evaluations()


def newest_checkpoints(run_dir) -> dict[int, checkpoint.Checkpoint]:
    """{shard: its newest checkpoint}, each read back in full and its checksum verified."""
    found = {}
    for k in range(SHARDS):
        files = checkpoint.list_files(run_dir / "checkpoints" / f"paramserver-{k}")
        assert files, f"shard {k} wrote no checkpoint"
        found[k] = checkpoint.read(files[0])
    return found


def log_events(run_dir, name: str, event: str) -> list[dict]:
    lines = (run_dir / "logs" / f"{name}.log").read_text().splitlines()
    records = [json.loads(x) for x in lines if x.startswith("{")]
    return [r for r in records if r.get("event") == event]


def test_bounded_cartpole_run_trains_checkpoints_evaluates_and_exits_0(slurm, tmp_path):
    run_dir = tmp_path / "run"
    job = submit(
        slurm,
        tmp_path / "job.out",
        COUNTS,
        env_for(run_dir, "0.75"),
        args=[*SMALL_RUN, "--save_every", "50"],
    )
    assert job.returncode == 0, job.output[-6000:]
    assert "BA3C_MINUTES=0.75 reached" in job.output
    for k, ckpt in newest_checkpoints(run_dir).items():
        assert ckpt.version > 0, f"shard {k} never advanced"
        assert ckpt.parameters, f"shard {k} checkpoint holds no parameters"
    assert evaluations(run_dir), "the evaluator wrote no evaluation to eval.jsonl"
    for name in ("paramserver-0", "paramserver-1", "learner-0", "simulator-0", "evaluator-0"):
        assert (run_dir / "logs" / f"{name}.log").stat().st_size > 0, name


def test_scancel_leaves_verified_checkpoints_and_a_resubmission_resumes(slurm, tmp_path):
    run_dir = tmp_path / "run"
    # save_every 0: the only checkpoints are the ones written on SIGTERM.
    args = [*SMALL_RUN, "--save_every", "0"]
    first = submit(
        slurm, tmp_path / "first.out", COUNTS, env_for(run_dir, "0"), args=args, wait=False
    )
    wait_for(
        lambda: any(e["version"] > 0 for e in evaluations(run_dir)),
        240,
        "an evaluation of trained parameters (version > 0)",
        interval=1,
    )
    assert not (run_dir / "checkpoints" / "paramserver-0").exists() or not checkpoint.list_files(
        run_dir / "checkpoints" / "paramserver-0"
    ), "a checkpoint before scancel"
    slurm.run("scancel", first.job_id)
    assert wait_for_job_end(slurm, first.job_id, 120).startswith("CANCELLED")
    cancelled = newest_checkpoints(run_dir)
    assert all(c.version > 0 for c in cancelled.values()), cancelled

    second = submit(slurm, tmp_path / "second.out", COUNTS, env_for(run_dir, "0.5"), args=args)
    assert second.returncode == 0, second.output[-6000:]
    resumed = newest_checkpoints(run_dir)
    for k in range(SHARDS):
        restored = log_events(run_dir, f"paramserver-{k}", "restored from checkpoint")
        assert [r["version"] for r in restored] == [cancelled[k].version], restored
        assert resumed[k].version > cancelled[k].version, (k, cancelled[k], resumed[k])
        assert resumed[k].env_frames > cancelled[k].env_frames
