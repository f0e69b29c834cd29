"""examples/node-pool, the simulator pool written in Node.js, against real Python services.

Its CartPole must be gymnasium's (same trajectories from the same state), it must follow
the Act step protocol as tests/servers/random_learner.py checks it, survive its learner
going away, and train CartPole to 195 with the Python paramserver and learner and no
Python pool at all. `make test` installs its npm packages first (`make node-pool`).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from tests.learner.cluster import CARTPOLE, metric
from tests.simulator.test_service import pool_seen, start_learner
from tests.support import ROOT, wait_for
from tests.support.metrics import scrape

POOL_DIR = ROOT / "examples" / "node-pool"
START = 60  # seconds: process start-up on a loaded 2-core machine


@pytest.fixture(scope="module", autouse=True)
def node_pool_installed():
    assert shutil.which("node"), "node is not on PATH: run `make test` (tests/system-deps.sh)"
    assert (POOL_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
        f"{POOL_DIR}/node_modules is missing: run `make node-pool` (part of `make test`)"
    )


def node_pool(processes, run_dir, *flags: str, name: str = "node-pool"):
    """The pool started as slurm/hetjob.sh starts a replacement: CMD simulator --run-dir D."""
    command = ["node", str(POOL_DIR / "pool.js"), "simulator", "--run-dir", str(run_dir.path)]
    return processes(name, *command, *flags, raw=True)


def gymnasium_trajectory(state: np.ndarray, actions: list[int]) -> list[tuple]:
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    env.unwrapped.state = state.copy()
    out = []
    for action in actions:
        obs, reward, terminated, _truncated, _ = env.step(action)
        out.append((obs, reward, terminated))
        if terminated:
            break
    return out


def js_trajectories(episodes: list[tuple[np.ndarray, list[int]]]) -> list[list[dict]]:
    done = subprocess.run(
        ["node", str(POOL_DIR / "cartpole.js")],
        input=json.dumps([{"state": s.tolist(), "actions": a} for s, a in episodes]),
        capture_output=True,
        text=True,
        timeout=START,
        check=True,
    )
    return json.loads(done.stdout)


def test_cartpole_in_js_follows_gymnasiums_physics_step_for_step():
    rng = np.random.default_rng(7)
    episodes = []
    for episode in range(20):
        state = rng.uniform(-0.05, 0.05, 4)
        if episode % 2:  # far from the start too: fast, tilted, near the edges
            state = rng.uniform([-2.3, -2, -0.2, -2], [2.3, 2, 0.2, 2])
        episodes.append((state, rng.integers(0, 2, 200).tolist()))
    ended = 0
    for episode, ((state, actions), got) in enumerate(
        zip(episodes, js_trajectories(episodes), strict=True)
    ):
        want = gymnasium_trajectory(state, actions)
        for t, ((obs, reward, terminated), step) in enumerate(
            zip(want, got[: len(want)], strict=True)
        ):
            np.testing.assert_allclose(
                step["observation"], obs, rtol=1e-5, atol=1e-6, err_msg=f"episode {episode} t={t}"
            )
            assert step["reward"] == reward == 1.0
            assert step["terminated"] == terminated, f"episode {episode} t={t}"
        ended += want[-1][2]
    assert ended >= 15  # the comparison covered how episodes end, not just how they start


def test_node_pool_follows_the_act_protocol_and_stops_on_sigterm(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=3, learners=2)
    start_learner(processes, run_dir, 1)
    # the flags hetjob.sh passes on (ignored) and one the pool uses (a 7-step limit)
    pool = node_pool(
        processes, run_dir, "--index", "3", "--pools", "4", "-l", "0.1", "--use_sync",
        "--sticky_actions", "-1", "--max_episode_steps", "7",
    )  # fmt: skip
    seen = pool_seen(run_dir, "simulator-3", requests=300, index=1)
    assert seen["errors"] == []
    assert seen["spec"] == {
        "env_id": "CartPole-v1",
        "num_envs": 3,
        "observation_shape": [4],
        "observation_dtype": "float32",
        "num_actions": 2,
    }
    assert seen["returns"] == [float(n) for n in seen["lengths"]]  # 1 point per step
    assert max(seen["lengths"]) == 7  # truncated at the step limit, and counted as done
    assert seen["dones"] == seen["episodes"] >= 3 * 300 // 7
    assert seen["env_frames"] == seen["agent_steps"]
    assert seen["obs_min"] < 0 < seen["obs_max"]  # real states, not zeros

    m = scrape(run_dir, "simulator", 3)
    assert m.value("ba3c_simulator_agent_steps_total") >= 3 * 300
    assert m.value("ba3c_simulator_env_frames_total") == m.value("ba3c_simulator_agent_steps_total")
    assert m.value("ba3c_simulator_episodes_total") >= 100
    assert m.value("ba3c_simulator_connected") == 1
    log = [json.loads(line) for line in (run_dir.sub("logs") / "simulator-3.log").open()]
    streaming = [line for line in log if line["event"] == "streaming"]
    assert streaming and streaming[0]["role"] == "simulator" and streaming[0]["index"] == 3

    assert pool.stop() == 0  # SIGTERM ends it cleanly
    assert not run_dir.target_path("simulator", 3).exists()


def test_node_pool_outlives_its_learner_and_a_broken_reply(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=2)
    first = start_learner(processes, run_dir, 0, "--bad-actions-after", "20", name="first")
    pool = node_pool(processes, run_dir)
    pool_seen(run_dir, "simulator-0", requests=40, streams=2)
    assert scrape(run_dir, "simulator").has(
        "ba3c_simulator_stream_restarts_total", reason="protocol"
    )
    first.kill()  # no goodbye; its address file stays behind, pointing at a dead port

    def retried():
        m = scrape(run_dir, "simulator")
        restarts = m.value("ba3c_simulator_stream_restarts_total", reason="unavailable")
        return m if restarts >= 2 else None

    m = wait_for(retried, START, "the pool to retry the dead learner")
    assert m.value("ba3c_simulator_connected") == 0
    start_learner(processes, run_dir, 0, name="second")  # a new port
    seen = pool_seen(run_dir, "simulator-0", requests=50)
    assert seen["streams"] == 1 and seen["errors"] == []  # a fresh stream, spec first
    log = (run_dir.sub("logs") / "simulator-0.log").read_text()
    assert "ActResponse.actions has 1 entries, expected 2" in log
    assert pool.alive()
    pool.signal(signal.SIGINT)
    assert pool.popen.wait(START) == 0


# tests/servers/random_learner.py serving TLS with the run's CA, as ba3c's servers do
TLS_LEARNER = """
import sys
from ba3c import rpc
from ba3c.rundir import RunDir
from ba3c.tls import RunTLS
tls = RunTLS(RunDir(sys.argv[1]))
tls.check()
rpc.use_tls(tls)
from tests.servers import random_learner
random_learner.main()
"""


def test_node_pool_speaks_tls_with_the_runs_ca(run_dir_factory, processes):
    run_dir = run_dir_factory(env="CartPole-v1", simulator_procs=2, tls=True)
    processes("learner", sys.executable, "-c", TLS_LEARNER, str(run_dir.path), raw=True)
    wait_for(lambda: run_dir.read_address("learner", 0), START, "the TLS learner's address")
    pool = node_pool(processes, run_dir)
    seen = pool_seen(run_dir, "simulator-0", requests=50)
    assert seen["errors"] == [] and seen["streams"] == 1
    assert pool.stop() == 0


def test_node_pool_refuses_another_env_with_one_line(run_dir_factory, processes):
    run_dir = run_dir_factory()  # ALE/Breakout-v5
    pool = node_pool(processes, run_dir)
    assert pool.popen.wait(START) == 2
    assert pool.output().strip().splitlines() == [
        "node-pool simulator: error: this pool only runs CartPole-v1, the run's env is "
        "'ALE/Breakout-v5'"
    ]


def test_python_learner_trains_cartpole_to_195_with_only_the_node_pool(run_dir_factory, processes):
    run_dir = run_dir_factory(**CARTPOLE)
    start = time.monotonic()
    for role in ("paramserver", "learner"):
        processes(role, role, "--run-dir", str(run_dir.path))
    node_pool(processes, run_dir)
    reached = wait_for(
        lambda: (m := metric(run_dir, "ba3c_learner_online_return_mean")) >= 195 and m,
        240,
        "a mean online return of 195 over 20 episodes",
        interval=0.5,
    )
    elapsed = time.monotonic() - start
    # the only pool was the Node.js one, and every episode the learner scored came from it
    assert metric(run_dir, "ba3c_learner_pools_connected") == 1
    assert sorted(p.name for p in run_dir.sub("targets").iterdir()) == [
        "learner-0.json",
        "paramserver-0.json",
        "simulator-0.json",
    ]
    assert '"implementation":"node-pool"' in (run_dir.sub("logs") / "simulator-0.log").read_text()
    # training goes on: read the learner before the pool, which counts an episode first
    scored = metric(run_dir, "ba3c_learner_online_episodes_total")
    episodes = scrape(run_dir, "simulator", 0).value("ba3c_simulator_episodes_total")
    assert episodes >= scored >= 20
    print(
        f"CartPole with the Node.js pool: mean return {reached:.1f} after {elapsed:.0f}s "
        f"({metric(run_dir, 'ba3c_learner_agent_steps_total'):.0f} agent steps)"
    )


def test_the_image_definition_copies_every_file_the_pool_needs():
    spec = importlib.util.spec_from_file_location(
        "containers_check", ROOT / "containers" / "check.py"
    )
    check = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("containers_check", check)  # dataclasses look their module up
    spec.loader.exec_module(check)
    definition = check.parse(POOL_DIR / "node-pool.def")
    sources = [line.split()[0] for line in definition.sections["files"].splitlines() if line]
    assert all((ROOT / source).exists() for source in sources), sources
    needed = {p.name for p in POOL_DIR.glob("*.js")} | {"package.json", "package-lock.json"}
    assert needed <= {Path(source).name for source in sources}
    assert "protos" in sources
    assert definition.sections["runscript"].split() == ["exec", "node-pool", '"$@"']


def test_the_node_pool_passes_the_simulator_conformance_kit(run_dir_factory, processes):
    from tests.conformance.test_kit import conformance, passes

    run_dir = run_dir_factory(env="CartPole-v1", model="mlp", simulator_procs=4)
    node_pool(processes, run_dir)
    code, output = conformance("simulator", run_dir, "--timeout", "60", "--steps", "100")
    passes(code, output, "simulator")
    assert "SKIP" not in output
