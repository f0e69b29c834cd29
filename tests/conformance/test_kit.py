"""`ba3c conformance ROLE` against ba3c's own services (real processes: they must pass)
and against a deliberately broken paramserver (it must fail, on the right check)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ba3c_command

CARTPOLE = dict(env="CartPole-v1", model="mlp")


def conformance(role: str, run_dir, *flags: str, timeout: float = 150) -> tuple[int, str]:
    """Runs the kit; returns (exit code, output)."""
    done = subprocess.run(
        ba3c_command("conformance", role, "--run-dir", str(run_dir.path), *flags),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(done.stdout, done.stderr)
    return done.returncode, done.stdout


def failed_checks(output: str) -> list[str]:
    return [line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("FAIL")]


def passes(code: int, output: str, role: str) -> None:
    assert code == 0, f"failed: {failed_checks(output)}"
    assert f"{role}: " in output and " 0 failed" in output
    assert output.count("PASS  ") >= 8


# A config that makes every optimizer rule show within a few versions: the linear schedule
# ends at version 4, a 4 MiB message limit the kit can exceed, async staleness bound 2.
ASYNC = dict(
    optimizer="adam",
    lr=0.01,
    lr_schedule="linear",
    lr_decay_steps=4,
    lr_final=0.001,
    max_staleness=2,
    max_message_mb=4,
    save_every=0,
)
SYNC = dict(
    optimizer="rmsprop",
    lr=0.01,
    use_sync=True,
    replicas_to_aggregate=2,
    sync_timeout=2.0,
    max_message_mb=4,
    save_every=0,
)


@pytest.mark.parametrize("knobs", [ASYNC, SYNC], ids=["async-adam", "sync-rmsprop"])
def test_our_paramserver_passes(run_dir_factory, processes, knobs):
    run_dir = run_dir_factory(**knobs)
    processes("paramserver", "paramserver", "--run-dir", str(run_dir.path))
    code, output = conformance("paramserver", run_dir, "--timeout", "60")
    passes(code, output, "paramserver")
    assert "SKIP" not in output  # every check applied to these configs
    names = {
        "optimizer.steps",
        "pushpull.nan",
        "initialize.garbage",
        "health.token",
        "pull.bfloat16",
    }
    for name in names:
        assert f"PASS  paramserver.{name}" in output


def test_broken_paramserver_fails_on_adam_bias_correction(run_dir_factory, processes):
    run_dir = run_dir_factory(**ASYNC)
    cmd = [sys.executable, "-m", "tests.servers.broken_paramserver", "--run-dir", str(run_dir.path)]
    processes("broken", *cmd, raw=True)
    code, output = conformance("paramserver", run_dir, "--timeout", "60")
    assert code == 1
    failed = failed_checks(output)
    assert failed[0] == "paramserver.optimizer.steps", failed
    assert "differ from the reference (adam" in output
    # what comes before the optimizer is untouched by the breakage
    assert "PASS  paramserver.initialize.applied" in output
    assert "PASS  paramserver.pushpull.nan" in output


def test_our_learner_passes(run_dir_factory, processes):
    run_dir = run_dir_factory(**CARTPOLE, batch_size=16, save_every=0)
    for role in ("paramserver", "learner"):
        processes(role, role, "--run-dir", str(run_dir.path))
    code, output = conformance("learner", run_dir, "--timeout", "120", "--steps", "50")
    passes(code, output, "learner")


def test_our_breakout_learner_passes_in_both_observation_modes(run_dir_factory, processes):
    """Image observations: the kit also streams newest frames (PoolSpec.frame_stack 4)."""
    run_dir = run_dir_factory(batch_size=16, save_every=0)
    for role in ("paramserver", "learner"):
        processes(role, role, "--run-dir", str(run_dir.path))
    code, output = conformance("learner", run_dir, "--timeout", "120", "--steps", "20")
    passes(code, output, "learner")
    for check in ("newest_frame.steps", "newest_frame.later_full", "first.frame_stack_channels"):
        assert f"PASS  learner.act.{check}" in output


def test_our_simulator_passes(run_dir_factory, processes):
    run_dir = run_dir_factory(**CARTPOLE, simulator_procs=4)
    processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    code, output = conformance("simulator", run_dir, "--timeout", "60", "--steps", "100")
    passes(code, output, "simulator")
    assert "SKIP" not in output  # CartPole episodes end within 100 steps of 4 envs


def test_our_double_buffered_newest_frame_pool_passes(run_dir_factory, processes):
    """Breakout with the Atari defaults: two halves (two pool ids) sending newest frames."""
    run_dir = run_dir_factory(simulator_procs=4, max_episode_steps=20)
    processes("simulator", "simulator", "--run-dir", str(run_dir.path))
    code, output = conformance("simulator", run_dir, "--timeout", "60", "--steps", "30")
    passes(code, output, "simulator")
    assert "SKIP" not in output  # games cut at 20 steps end within the 30 steps
    log = (run_dir.path / "logs" / "simulator-0.log").read_text()
    assert '"streams": [2, 2]' in log and '"frame_stack": 4' in log


def test_our_evaluator_passes(run_dir_factory, processes):
    run_dir = run_dir_factory(
        **CARTPOLE, ps=2, eval_every=1.0, eval_episodes=2, eval_max_steps=50, metrics=False
    )
    processes("evaluator", "evaluator", "--run-dir", str(run_dir.path))
    code, output = conformance("evaluator", run_dir, "--timeout", "120")
    passes(code, output, "evaluator")


def test_the_kit_needs_no_tensorflow_for_paramserver_and_simulator():
    code = (
        "import sys; import ba3c.tools.conformance.main, ba3c.tools.conformance.paramserver, "
        "ba3c.tools.conformance.simulator; assert 'tensorflow' not in sys.modules, 'tensorflow'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_bad_usage_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        ba3c_command("conformance", "paramserver", "--run-dir", str(tmp_path / "nowhere")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "config.toml does not exist" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
