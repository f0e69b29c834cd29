"""slurm/hetjob.sh with a replaced service: BA3C_BIN_SIMULATOR runs examples/node-pool (the
Node.js pool) in place of `ba3c simulator`, next to the real Python services, under a real
Slurm. The job trains on the Node.js pool's episodes and stops it cleanly at the end."""

from __future__ import annotations

import json

import pytest

from ba3c import checkpoint
from tests.slurm.hetjob import components, real_ba3c, submit
from tests.support import ROOT

POOL = ROOT / "examples" / "node-pool" / "pool.js"


@pytest.mark.slow
def test_bin_simulator_swaps_in_the_node_pool(slurm, tmp_path):
    run_dir = tmp_path / "run"
    env = {
        "BA3C_BIN": real_ba3c(),
        "BA3C_BIN_SIMULATOR": f"node {POOL}",
        "BA3C_CONTAINER": "none",
        "BA3C_RUN_DIR": str(run_dir),
        "BA3C_MINUTES": "0.5",
    }
    args = ["--env", "CartPole-v1", "--no-record_node", "--simulator_procs", "4"]
    args += ["--batch_size", "32", "--save_every", "20", "--eval_every", "600"]
    job = submit(slurm, tmp_path / "job.out", components(ps=1, learners=1, pools=1), env, args)
    assert job.returncode == 0, job.output[-6000:]
    assert "BA3C_MINUTES=0.5 reached" in job.output
    pool_log = [json.loads(x) for x in (run_dir / "logs" / "simulator-0.log").open()]
    events = [r["event"] for r in pool_log]
    assert pool_log[0]["implementation"] == "node-pool"  # not `ba3c simulator`
    assert "streaming" in events and events[-2:] == ["signal received, stopping", "stopped"]
    files = checkpoint.list_files(run_dir / "checkpoints" / "paramserver-0")
    newest = checkpoint.read(files[0])
    assert newest.version > 0 and newest.env_frames > 0  # trained on the Node.js pool's data
