"""`ba3c simulator` as a real process, streaming to a real (random-action) learner process.

The learner is tests/servers/random_learner.py: it serves Learner.Act through ba3c.rpc
with the run's token, checks every request against the step protocol, and writes what it
saw to RUN_DIR/random_learner-I.json.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.support import ROOT, ba3c_command, wait_for
from tests.support.metrics import scrape

START = 60  # seconds: process start-up on a loaded 2-core machine


def start_learner(processes, run_dir, index=0, *extra, name="learner"):
    run_dir.remove_address("learner", index)
    stats = run_dir.path / f"random_learner-{index}.json"
    stats.unlink(missing_ok=True)
    p = processes(
        name,
        sys.executable,
        "-m",
        "tests.servers.random_learner",
        str(run_dir.path),
        "--index",
        str(index),
        *extra,
        raw=True,
    )
    wait_for(lambda: run_dir.read_address("learner", index), START, "the learner's address")
    return p


def learner_stats(run_dir, index=0) -> dict:
    path = run_dir.path / f"random_learner-{index}.json"
    try:
        return json.loads(path.read_text())["pools"]
    except FileNotFoundError:
        return {}


def pool_seen(run_dir, pool_id, requests, index=0, streams=1):
    """The learner's record of `pool_id` once it has `requests` and `streams`."""

    def ready():
        pool = learner_stats(run_dir, index).get(pool_id)
        if pool and pool["requests"] >= requests and pool["streams"] >= streams:
            return pool
        return None

    return wait_for(ready, START, f"{requests} requests from {pool_id} in {streams} stream(s)")


def test_pool_waits_for_its_learner_then_streams_breakout(run_dir_factory, processes):
    """Double-buffered (the default for Atari): two halves, each its own stream, sending
    the newest frame only (the learner checks the [N, 84, 84, 1] frames)."""
    run_dir = run_dir_factory(simulator_procs=5)
    sim = processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    wait_for(
        lambda: (run_dir.path / "targets" / "simulator-0.json").exists(),
        START,
        "the simulator to start",
    )
    assert sim.alive()
    start_learner(processes, run_dir)
    halves = {"simulator-0/a": 3, "simulator-0/b": 2}
    for pool_id, n in halves.items():
        pool = pool_seen(run_dir, pool_id, requests=300)
        assert pool["errors"] == []
        assert pool["spec"] == {
            "env_id": "ALE/Breakout-v5",
            "num_envs": n,
            "observation_shape": [84, 84, 4],
            "observation_dtype": "uint8",
            "num_actions": 4,
            "frame_stack": 4,
        }
        assert pool["obs_min"] == 0 and pool["obs_max"] > 0  # real screens, not blank frames
        assert pool["env_frames"] == 4 * pool["agent_steps"]  # frame skip 4
    # episodic life: every lost life is a done, so dones outnumber finished games
    wait_for(lambda: learner_stats(run_dir)["simulator-0/a"]["episodes"] >= 1, START, "a game")
    pool = learner_stats(run_dir)["simulator-0/a"]
    assert pool["dones"] > pool["episodes"] >= 1
    assert all(r >= 0 for r in pool["returns"]) and all(n > 0 for n in pool["lengths"])
    assert set(learner_stats(run_dir)) == set(halves)

    m = scrape(run_dir, "simulator")
    assert m.value("ba3c_simulator_agent_steps_total") >= 5 * 300
    assert m.value("ba3c_simulator_env_frames_total") == 4 * m.value(
        "ba3c_simulator_agent_steps_total"
    )
    assert m.value("ba3c_simulator_wait_seconds_count") >= 2 * 300
    assert m.value("ba3c_simulator_step_seconds_sum") > 0
    assert m.value("ba3c_simulator_connected") == 1

    assert sim.stop() == 0  # SIGTERM ends it cleanly
    assert not (run_dir.path / "targets" / "simulator-0.json").exists()


def test_pool_with_full_observations_on_one_stream(run_dir_factory, processes):
    """--no-double_buffer --no-newest_frame: the pool of contract version 1."""
    run_dir = run_dir_factory(simulator_procs=2, double_buffer=False, newest_frame=False)
    start_learner(processes, run_dir)
    sim = processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    pool = pool_seen(run_dir, "simulator-0", requests=20)
    assert pool["errors"] == []
    assert pool["spec"]["num_envs"] == 2 and "frame_stack" not in pool["spec"]
    assert set(learner_stats(run_dir)) == {"simulator-0"}
    assert sim.stop() == 0


def test_pool_streams_cartpole_vectors(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=3)
    start_learner(processes, run_dir)
    sim = processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    pool = pool_seen(run_dir, "simulator-0", requests=200)
    assert pool["errors"] == []
    assert pool["spec"] == {
        "env_id": "CartPole-v1",
        "num_envs": 3,
        "observation_shape": [4],
        "observation_dtype": "float32",
        "num_actions": 2,
    }
    assert pool["episodes"] >= 3
    assert pool["returns"] == [float(n) for n in pool["lengths"]]  # 1 point per step
    assert pool["env_frames"] == pool["agent_steps"]
    assert sim.stop() == 0


def test_pool_survives_its_learner_restarting(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=2)
    first = start_learner(processes, run_dir, name="learner-first")
    sim = processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    pool_seen(run_dir, "simulator-0", requests=50)
    first.kill()  # no goodbye; its address file stays behind, pointing at a dead port

    # the pool keeps retrying while no learner is there
    def retried():
        m = scrape(run_dir, "simulator")
        return m if m.value("ba3c_simulator_stream_restarts_total") >= 2 else None

    m = wait_for(retried, START, "the pool to retry")
    assert m.value("ba3c_simulator_connected") == 0
    assert sim.alive()
    start_learner(processes, run_dir, name="learner-second")  # a new port
    pool = pool_seen(run_dir, "simulator-0", requests=50)
    # a fresh stream: the new learner checked that it began with the spec, no rewards
    assert pool["streams"] == 1 and pool["errors"] == []
    assert sim.alive()
    assert sim.stop() == 0


def test_a_learner_breaking_the_contract_gets_a_fresh_stream(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=2)
    start_learner(processes, run_dir, 0, "--bad-actions-after", "20")
    sim = processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    pool = pool_seen(run_dir, "simulator-0", requests=40, streams=3)
    assert pool["errors"] == []
    assert scrape(run_dir, "simulator").has(
        "ba3c_simulator_stream_restarts_total", reason="protocol"
    )
    assert sim.alive()
    log = (run_dir.path / "logs" / "simulator-0.log").read_text()
    assert "ActResponse.actions has 1 entries, expected 2" in log
    assert sim.stop() == 0


def test_pool_i_dials_learner_i_mod_learners(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=2, learners=2)
    start_learner(processes, run_dir, 1)
    sim = processes("simulator", "simulator", "--run-dir", str(run_dir.path), "--index", "3")
    pool = pool_seen(run_dir, "simulator-3", requests=10, index=1)
    assert pool["errors"] == []
    assert sim.stop() == 0


def test_a_bad_env_id_fails_at_start_with_one_line(run_dir_factory, processes):
    run_dir = run_dir_factory()
    sim = processes(
        "simulator", "simulator", "--run-dir", str(run_dir.path), "--env", "ALE/Breakot-v5"
    )
    assert sim.popen.wait(START) == 2
    output = sim.output()
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert errors == [
        "ba3c simulator: error: unknown environment id 'ALE/Breakot-v5' (Environment `Breakot` "
        "doesn't exist in namespace ALE. Did you mean: `Breakout`?); run `ba3c simulator "
        "--list-envs` to see valid ids"
    ]
    assert "Traceback" not in output


def test_list_envs_names_atari_and_other_ids():
    out = subprocess.run(
        ba3c_command("simulator", "--list-envs"),
        capture_output=True,
        text=True,
        timeout=START,
        cwd=ROOT,
    )
    assert out.returncode == 0
    ids = out.stdout.split()
    assert "ALE/Breakout-v5" in ids and "BreakoutNoFrameskip-v4" in ids and "CartPole-v1" in ids


def test_sigint_while_waiting_for_a_learner_exits_cleanly(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=2)
    sim = processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    wait_for(
        lambda: "pool ready" in (run_dir.path / "logs" / "simulator-0.log").read_text(),
        START,
        "the pool to be ready",
    )
    sim.signal(signal.SIGINT)
    assert sim.popen.wait(START) == 0
