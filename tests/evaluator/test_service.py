"""`ba3c evaluator` against real paramserver processes, and `ba3c evaluate` offline."""

import json
import signal
import subprocess

import pytest

from tests.evaluator import cluster
from tests.support import ba3c_command, wait_for
from tests.support.metrics import scrape

START = 90  # seconds for a process that imports TensorFlow on a busy 2-core machine


def config_of(run_dir):
    return run_dir.load_config(environ={})


def test_the_service_evaluates_the_pulled_parameters_and_reports_everywhere(
    run_dir_factory, processes
):
    run_dir = run_dir_factory(
        **cluster.CARTPOLE,
        ps=2,
        eval_every=0.2,
        eval_episodes=4,
        eval_max_steps=200,
        eval_both=True,
    )
    cfg = config_of(run_dir)
    evaluator = processes("evaluator", "evaluator", "--run-dir", str(run_dir.path))
    # started before any shard exists: it waits instead of failing
    wait_for(lambda: cluster.logged(run_dir, "waiting for shard"), START, "the evaluator to wait")

    shards = cluster.start_shards(processes, run_dir, 2)
    cluster.initialize(run_dir, cfg, cluster.controller_weights(cfg))
    first = wait_for(lambda: cluster.evaluations(run_dir), START, "the first evaluation")[0]
    assert (first["version"], first["episodes"], first["env_frames"]) == (0, 4, 0)
    assert first["mean"] > 150, f"scored like random weights, not the pulled ones: {first}"
    assert first["min"] <= first["mean"] <= first["max"] <= 200
    assert first["max"] > first["min"], "a sampled policy should not play 4 identical games"
    # --eval_both: the greedy policy on the same seeds, reported beside the sampled one
    greedy = first["other_policy"]
    assert greedy["greedy"] is True and first["greedy"] is False and len(greedy["scores"]) == 4
    assert 150 < greedy["mean"] <= 200 and greedy["scores"] != first["scores"]

    # the same parameters are not evaluated again, and the shards are polled without
    # sending parameters (have_version)
    wait_for(
        lambda: (
            scrape(run_dir, "evaluator").value("ba3c_evaluator_pulls_total", outcome="unchanged")
            >= 4
        ),
        30,
        "Pulls of unchanged shards",
    )
    m = scrape(run_dir, "evaluator")
    assert m.value("ba3c_evaluator_pulls_total", outcome="new") == 2
    assert m.value("ba3c_evaluator_evaluations_total") == 1
    assert m.value("ba3c_evaluator_score", stat="mean") == pytest.approx(first["mean"])
    assert len(cluster.evaluations(run_dir)) == 1

    # a reader never writes: versions unchanged, not counted as a live learner
    for k in range(2):
        s = cluster.status(run_dir, k)
        assert (s.version, s.pushes_applied, s.live_learners) == (0, 0, 0)

    # new parameters (a learner pushed) are evaluated with the same seeds
    assert cluster.push_zero_gradients(run_dir, cfg, env_frames=5000) == [1, 1]
    second = wait_for(lambda: cluster.evaluations(run_dir)[1:], START, "a second evaluation")[0]
    assert (second["version"], second["env_frames"]) == (1, 5000)
    assert second["scores"] == first["scores"]  # sgd of zero gradients changed nothing
    assert scrape(run_dir, "evaluator").value("ba3c_evaluator_pulls_total", outcome="new") == 4

    # eval.jsonl is written before TensorBoard's file is flushed: wait for both there
    scalars = wait_for(
        lambda: (
            (s := cluster.read_scalars(run_dir.path / "tensorboard" / "eval"))
            and len(s.get("eval/score_mean", [])) >= 2
            and s
        ),
        START,
        "the second evaluation in TensorBoard",
    )
    assert scalars["eval/score_mean"] == [
        (0, pytest.approx(first["mean"])),
        (1, pytest.approx(second["mean"])),
    ]
    assert [v for _, v in scalars["eval/score_max"]] == [first["max"], second["max"]]
    assert [v for _, v in scalars["eval/score_min"]] == [first["min"], second["min"]]
    assert scalars["eval/episode_length"][0][1] == pytest.approx(first["mean_length"])
    assert [v for _, v in scalars["eval/greedy_mean"]] == [
        pytest.approx(first["other_policy"]["mean"]),
        pytest.approx(second["other_policy"]["mean"]),
    ]

    assert evaluator.stop() == 0
    assert cluster.logged(run_dir, "evaluator stopped")[-1]["evaluations"] == 2

    # the checkpoints the shards write when they stop, evaluated with no cluster at all
    assert [shard.stop() for shard in shards] == [0, 0]
    offline = evaluate_offline("--checkpoint", str(run_dir.path / "checkpoints"), "--json")
    assert offline.returncode == 0, offline.stderr[-3000:]
    result = json.loads(offline.stdout)
    assert result["version"] == 1
    assert result["scores"] == second["scores"]
    assert result["mean"] == pytest.approx(second["mean"])


def evaluate_offline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ba3c_command("evaluate", *args),
        capture_output=True,
        text=True,
        timeout=START,
        env=cluster.quiet_env(),
    )


def test_sigterm_lets_the_evaluation_in_progress_finish(run_dir_factory, processes):
    run_dir = run_dir_factory(**cluster.CARTPOLE, eval_episodes=10, eval_max_steps=300)
    cfg = config_of(run_dir)
    cluster.start_shards(processes, run_dir, 1)
    cluster.initialize(run_dir, cfg, cluster.controller_weights(cfg))
    evaluator = processes("evaluator", "evaluator", "--run-dir", str(run_dir.path))
    wait_for(lambda: cluster.logged(run_dir, "evaluation started"), START, "an evaluation")
    evaluator.signal(signal.SIGTERM)
    assert evaluator.popen.wait(START) == 0
    events = [e["event"] for e in cluster.log_events(run_dir)]
    assert events.index("signal received, stopping") < events.index("evaluation"), (
        "the evaluation had ended before the signal; make it longer"
    )
    [result] = cluster.evaluations(run_dir)
    assert result["episodes"] == 10


def test_parameters_that_do_not_fit_the_model_end_with_a_clear_error(run_dir_factory, processes):
    run_dir = run_dir_factory(**cluster.CARTPOLE)
    cfg = config_of(run_dir)
    cluster.start_shards(processes, run_dir, 1)
    cluster.initialize(run_dir, cfg, cluster.controller_weights(cfg))
    evaluator = processes(
        "evaluator", "evaluator", "--run-dir", str(run_dir.path), "--mlp_hidden", "32"
    )
    assert evaluator.popen.wait(START) == 2
    last = evaluator.output().strip().splitlines()[-1]
    assert last.startswith("ba3c evaluator: error: paramserver-0 holds parameters that do not")
    assert "hidden1/kernel has shape [4, 64], the model expects [4, 32]" in last
    assert cluster.evaluations(run_dir) == []


def test_a_bad_flag_is_one_line_and_exit_2(run_dir_factory):
    run_dir = run_dir_factory()
    done = subprocess.run(
        ba3c_command("evaluator", "--run-dir", str(run_dir.path), "--eval_episodes", "many"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "ba3c evaluator: error: flag --eval_episodes: eval_episodes expects int, got 'many'"
    )
    assert "Traceback" not in done.stderr


def test_offline_evaluation_of_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    done = evaluate_offline("--checkpoint", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"ba3c evaluate: error: --checkpoint {tmp_path / 'nowhere'} "
        "does not exist"
    )


def test_offline_evaluation_of_a_run_without_checkpoints_says_so(run_dir_factory):
    run_dir = run_dir_factory(**cluster.CARTPOLE)
    done = evaluate_offline("--checkpoint", str(run_dir.path))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ba3c evaluate: error: cannot load parameters from {run_dir.path}")
    assert "no checkpoints" in last


def test_restarts_of_a_shard_and_of_the_evaluator_neither_stop_nor_repeat_evaluations(
    run_dir_factory, processes
):
    run_dir = run_dir_factory(**cluster.CARTPOLE, eval_every=0.2, eval_episodes=2)
    cfg = config_of(run_dir)
    [shard] = cluster.start_shards(processes, run_dir, 1)
    cluster.initialize(run_dir, cfg, cluster.controller_weights(cfg))
    # CartPole cannot render here (no pygame): recording is refused, evaluating goes on
    evaluator = processes("evaluator", "evaluator", "--run-dir", str(run_dir.path), "--record")
    wait_for(lambda: cluster.evaluations(run_dir), START, "the first evaluation")
    [warning] = cluster.logged(run_dir, "recording disabled: the environment cannot render frames")
    assert "pygame" in warning["error"]
    assert cluster.evaluations(run_dir)[0]["video"] is None

    # the shard goes away and comes back elsewhere (restored from its final checkpoint)
    old_address = run_dir.read_address("paramserver", 0)
    assert shard.stop() == 0
    wait_for(lambda: cluster.logged(run_dir, "waiting for shard"), 30, "the evaluator to notice")
    cluster.start_shards(processes, run_dir, 1)
    assert run_dir.read_address("paramserver", 0) != old_address
    assert cluster.push_zero_gradients(run_dir, cfg, env_frames=10) == [1]
    wait_for(lambda: cluster.evaluations(run_dir)[1:], START, "an evaluation after the restart")
    assert [e["version"] for e in cluster.evaluations(run_dir)] == [0, 1]
    assert evaluator.stop() == 0

    # a new evaluator process skips the version the previous one evaluated
    processes("evaluator-again", "evaluator", "--run-dir", str(run_dir.path))
    wait_for(
        lambda: (
            scrape(run_dir, "evaluator").value("ba3c_evaluator_pulls_total", outcome="unchanged")
            >= 2
        ),
        START,
        "the new evaluator to poll the shard",
    )
    assert scrape(run_dir, "evaluator").value("ba3c_evaluator_evaluations_total") == 0
    assert len(cluster.evaluations(run_dir)) == 2
