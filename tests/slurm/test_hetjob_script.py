"""slurm/hetjob.sh under a real Slurm, with a stand-in `ba3c` (BA3C_BIN) whose services cost
nothing: placement, container command lines and environment, the bound, ordered stop,
restarts, failure reports, --export=NONE, the run-directory lock, stop-and-requeue."""

from __future__ import annotations

import os
import subprocess
import tomllib

from tests.slurm.cluster import wait_for_job_end
from tests.slurm.hetjob import (
    FAKE_APPTAINER,
    FAKE_BA3C,
    SCRIPT,
    Job,
    components,
    real_ba3c,
    submit,
)
from tests.support import ROOT, wait_for


def fake_env(run_dir, **extra):
    return {
        "BA3C_BIN": str(FAKE_BA3C),
        "FAKE_BA3C_REAL": real_ba3c(),
        "BA3C_RUN_DIR": str(run_dir),
        **extra,
    }


def placements(run_dir) -> dict[str, list[str]]:
    """{ROLE-INDEX: lines the fake wrote (node=..., stopped TIME)}."""
    folder = run_dir / "fake"
    return {p.name: p.read_text().splitlines() for p in folder.iterdir() if "." not in p.name}


def stop_time(lines: list[str]) -> float:
    return min(float(line.split()[1]) for line in lines if line.startswith("stopped"))


def seen_env(run_dir, name: str) -> dict[str, str]:
    """The variables the fake service `name` saw (Slurm's, knobs, PYTHONNOUSERSITE)."""
    lines = (run_dir / "fake" / f"{name}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_components_run_in_their_images_on_their_own_nodes_and_stop_in_order(slurm, tmp_path):
    run_dir, images, bin_dir = tmp_path / "run", tmp_path / "images", tmp_path / "bin"
    images.mkdir()
    for role in ("paramserver", "learner", "simulator", "evaluator"):
        (images / f"{role}.sif").write_bytes(b"fake image")
    bin_dir.mkdir()
    (bin_dir / "apptainer").symlink_to(FAKE_APPTAINER)
    calls = tmp_path / "apptainer-calls"
    env = fake_env(
        run_dir,
        BA3C_CONTAINER="apptainer",
        BA3C_IMAGES=str(images),
        BA3C_BIN="ba3c-fake",
        BA3C_MINUTES="0.1",
        FAKE_APPTAINER_LOG=str(calls),
        BA3C_LR="0.0005",
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        # A site's options that empty the environment must not cost addresses or knobs.
        BA3C_CONTAINER_ARGS="--cleanenv",
        BA3C_CONTAINER_ARGS_LEARNER="--containall --nv",
        # One crashed evaluator is restarted; the run goes on and ends cleanly.
        FAKE_BA3C_FAIL_ONCE="evaluator-0",
    )
    (bin_dir / "ba3c-fake").symlink_to(FAKE_BA3C)
    # A replacement paramserver that knows nothing of `ba3c init-run`: the job runs that
    # with ba3c's own command, so the replacement is only ever started as the service.
    replacement = bin_dir / "replacement-paramserver"
    replacement.write_text(
        '#!/usr/bin/env bash\n[ "$1" = init-run ] && { echo "no init-run here" >&2; exit 9; }\n'
        'exec ba3c-fake "$@"\n'
    )
    replacement.chmod(0o755)
    env["BA3C_BIN_PARAMSERVER"] = "replacement-paramserver"
    job = submit(
        slurm, tmp_path / "job.out", components(2, 1, 2), env, args=["--env", "CartPole-v1"]
    )
    assert job.returncode == 0, job.output

    seen = placements(run_dir)
    assert sorted(seen) == [
        "evaluator-0",
        "learner-0",
        "paramserver-0",
        "paramserver-1",
        "simulator-0",
        "simulator-1",
    ], job.output
    node = {name: lines[0].split()[0] for name, lines in seen.items()}
    assert node["paramserver-0"] == node["paramserver-1"]
    assert node["simulator-0"] == node["simulator-1"]
    groups = {node[n] for n in ("paramserver-0", "learner-0", "simulator-0", "evaluator-0")}
    assert len(groups) == 4, node
    assert all("cpus=1" in lines[0] for lines in seen.values()), seen

    # The bound ended the run: everyone got SIGTERM, the shards last (final checkpoint).
    last_other = max(stop_time(seen[n]) for n in seen if not n.startswith("paramserver"))
    assert min(stop_time(seen[f"paramserver-{k}"]) for k in (0, 1)) >= last_other
    assert "BA3C_MINUTES=0.1 reached" in job.output

    lines = calls.read_text().splitlines()
    assert (
        f"exec --bind {run_dir} --cleanenv {images}/paramserver.sif ba3c-fake init-run"
        in (lines[0])
    )
    for role in ("paramserver", "learner", "simulator", "evaluator"):
        args = "--cleanenv --containall --nv" if role == "learner" else "--cleanenv"
        command = "replacement-paramserver" if role == "paramserver" else "ba3c-fake"
        assert any(
            line.startswith(
                f"exec --bind {run_dir} {args} {images}/{role}.sif {command} {role} "
                f"--run-dir {run_dir}"
            )
            for line in lines
        ), (role, lines)
    # Inside the (clean) container each service saw its own task's Slurm variables, the
    # knobs, and PYTHONNOUSERSITE=1.
    for name in seen:
        inside = seen_env(run_dir, name)
        assert inside["SLURM_JOB_ID"] and f"node={inside['SLURMD_NODENAME']}" == node[name], inside
        assert inside["SLURM_PROCID"] == name.rsplit("-", 1)[1], (name, inside)
        assert inside["BA3C_LR"] == "0.0005" and inside["PYTHONNOUSERSITE"] == "1", inside
    assert "crashed: component 3 (evaluator) task 0" in job.output
    assert "exited with code 4; restart 1 of 3" in job.output
    assert "FAILED: component" not in job.output

    cfg = tomllib.loads((run_dir / "config.toml").read_text())
    assert (cfg["paramserver"]["ps"], cfg["learner"]["learners"], cfg["simulator"]["pools"]) == (
        2,
        1,
        2,
    )
    assert cfg["paramserver"]["use_sync"] is True
    assert cfg["paramserver"]["replicas_to_aggregate"] == 1
    assert cfg["evaluator"]["record_node"] is True
    assert cfg["run"]["env"] == "CartPole-v1"
    assert cfg["optim"]["lr"] == 0.0005


def test_a_task_that_keeps_failing_fails_the_job_naming_component_task_and_log(slurm, tmp_path):
    run_dir = tmp_path / "run"
    env = fake_env(
        run_dir,
        BA3C_CONTAINER="none",
        BA3C_MINUTES="5",
        BA3C_MAX_RESTARTS="1",
        FAKE_BA3C_FAIL="learner-0",
    )
    job = submit(slurm, tmp_path / "job.out", components(1, 1, 2), env)
    assert job.returncode == 1, job.output
    assert "crashed: component 1 (learner) task 0" in job.output
    assert "FAILED: component 1 (learner) task 0" in job.output
    assert "exited with code 3 after 1 restart(s)" in job.output
    assert f"last lines of {run_dir}/logs/learner-0.log" in job.output
    assert "the emulator exploded" in job.output
    # Everyone else was stopped rather than left running until the bound.
    seen = placements(run_dir)
    assert all(
        any(x.startswith("stopped") for x in seen[n])
        for n in ("paramserver-0", "simulator-0", "simulator-1", "evaluator-0")
    ), seen


def test_bad_settings_fail_at_once_with_one_clear_line(slurm, tmp_path):
    cases = [
        (
            {"BA3C_CONTAINER": "docker"},
            [],
            "BA3C_CONTAINER must be apptainer, singularity or none, got 'docker'",
        ),
        ({"BA3C_CONTAINER": "none"}, ["--lr", "-1"], "--lr must be a positive number"),
        (
            {"BA3C_CONTAINER": "apptainer", "PATH": "/usr/bin:/bin"},
            [],
            "BA3C_CONTAINER=apptainer, but no apptainer on PATH",
        ),
        (
            {"BA3C_CONTAINER": "none", "BA3C_BIN": "no-such-ba3c"},
            [],
            "the ba3c command (init-run) 'no-such-ba3c' is not on PATH",
        ),
        ({"BA3C_CONTAINER": "none", "BA3C_MAX_RESTARTS": "many"}, [], "BA3C_MAX_RESTARTS must"),
    ]
    jobs = []
    for i, (extra, args, _) in enumerate(cases):
        env = fake_env(tmp_path / f"run{i}", **extra)
        jobs.append(
            submit(slurm, tmp_path / f"job{i}.out", components(1, 1, 1), env, args=args, wait=False)
        )
    for job, (_, _, message) in zip(jobs, cases, strict=True):
        state = wait_for_job_end(slurm, job.job_id, 120)
        assert state.startswith("FAILED"), (state, job.output)
        assert message in job.output, job.output
        assert "Traceback" not in job.output
        assert slurm.run("scontrol", "show", "job", job.job_id).stdout.count("ExitCode=2:0")


def test_export_none_a_second_job_is_refused_and_usr2_stops_in_order_and_requeues(slurm, tmp_path):
    """`sbatch --export=NONE` (settings as leading arguments) runs; a second job on the same
    run directory is refused without touching it; `scancel --batch --signal=USR2` stops
    pools, evaluator, learners, then shards, and requeues the job."""
    run_dir = tmp_path / "run"
    fake = f"env FAKE_BA3C_REAL={real_ba3c()} PYTHONPATH={ROOT} {FAKE_BA3C}"
    settings = [f"BA3C_BIN={fake}", f"BA3C_RUN_DIR={run_dir}", "BA3C_CONTAINER=none"]
    first = submit_export_none(slurm, tmp_path / "first.out", [*settings, "BA3C_MINUTES=0"])
    address = run_dir / "addresses" / "paramserver-0"
    wait_for(
        lambda: (run_dir / "fake" / "evaluator-0").exists() and address.exists(),
        120,
        "every component of the first job to start",
        interval=0.5,
    )
    published = address.read_text()
    assert seen_env(run_dir, "learner-0")["SLURM_PROCID"] == "0"  # tasks got their env
    # The script's per-component memory requests stand beside the counts given at submission.
    shown = slurm.run("scontrol", "show", "job", first.job_id).stdout
    memory = [w.split("=", 1)[1] for w in shown.split() if w.startswith("MinMemoryNode=")]
    assert memory == ["4G", "8G", "4G", "4G"], memory

    second = submit_export_none(slurm, tmp_path / "second.out", [*settings, "BA3C_MINUTES=0"])
    assert wait_for_job_end(slurm, second.job_id, 120).startswith("FAILED")
    assert f"{run_dir} is in use by another job (job {first.job_id} on" in second.output
    assert address.read_text() == published, "the refused job changed the live run"
    assert "Traceback" not in second.output

    slurm.run("scancel", "--batch", "--signal=USR2", first.job_id)
    wait_for(
        lambda: (
            "requeueing job" in first.output
            and slurm.job_states(first.job_id)[0] in ("PENDING", "REQUEUED")
        ),
        120,
        "the first job to stop and requeue itself",
        interval=0.5,
    )
    assert "stopping (USR2: stop and requeue)" in first.output
    seen = placements(run_dir)
    order = sorted(seen, key=lambda n: stop_time(seen[n]))
    roles = [n.rsplit("-", 1)[0] for n in order]
    assert roles == ["simulator", "evaluator", "learner", "paramserver"], order
    shown = slurm.run("scontrol", "show", "job", first.job_id).stdout
    assert "Restarts=1" in shown, shown
    slurm.run("scancel", first.job_id)  # the requeued job waits for its begin time: end it
    wait_for_job_end(slurm, first.job_id, 60)


def submit_export_none(slurm, out, settings: list[str]):
    """sbatch --export=NONE: nothing of this environment reaches the job but SLURM_*."""
    done = subprocess.run(
        ["sbatch", "--parsable", "--export=NONE", f"--output={out}"]
        + components(1, 1, 1)
        + [str(SCRIPT), *settings],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "SLURM_CONF": slurm.env["SLURM_CONF"]},
    )
    assert done.returncode == 0, done.stderr
    return Job(0, done.stdout.strip().split(";")[0], out)


def test_the_time_limits_signal_stops_in_order_and_the_job_completes(slurm, tmp_path):
    """--signal=B:USR1@T as Slurm itself sends it before the time limit (here a one-minute
    limit, so it comes within seconds): the ordered stop runs and the job is COMPLETED,
    not TIMEOUT or FAILED."""
    run_dir = tmp_path / "run"
    env = fake_env(run_dir, BA3C_CONTAINER="none", BA3C_MINUTES="0")
    counts = ["--time=1", "--signal=B:USR1@45", *components(1, 1, 1)]
    job = submit(slurm, tmp_path / "job.out", counts, env, wait=False)
    assert wait_for_job_end(slurm, job.job_id, 120) == "COMPLETED", job.output
    assert "stopping (USR1" in job.output, job.output
    seen = placements(run_dir)
    if len(seen) == 4:  # USR1 may come before the other components started; if not:
        order = sorted(seen, key=lambda n: stop_time(seen[n]))
        assert order[-1] == "paramserver-0", order
    assert all(any(x.startswith("stopped") for x in lines) for lines in seen.values()), seen


def test_preemption_stops_in_order_and_requeues(slurm, tmp_path):
    """A job in the higher-tier partition needs the shards' node: Slurm picks the run for
    preemption and sends its --signal at once (preempt_send_user_signal, GraceTime 60 s):
    the run stops in order and requeues itself to resume later."""
    run_dir = tmp_path / "run"
    env = fake_env(run_dir, BA3C_CONTAINER="none", BA3C_MINUTES="0")
    job = submit(slurm, tmp_path / "job.out", components(1, 1, 1), env, wait=False)
    wait_for(
        lambda: len(placements(run_dir)) == 4 if (run_dir / "fake").exists() else False,
        120,
        "every component to start",
        interval=0.5,
    )
    node = placements(run_dir)["paramserver-0"][0].split()[0].removeprefix("node=")
    urgent = slurm.run(
        "sbatch",
        "--parsable",
        "-p",
        "urgent",
        "-w",
        node,
        "--exclusive",
        f"--output={tmp_path}/urgent.out",
        "--wrap",
        "sleep 1",
    ).stdout.strip()
    try:
        wait_for(
            lambda: (
                "requeueing job" in job.output
                and slurm.job_states(job.job_id)[0] in ("PENDING", "REQUEUED")
            ),
            120,
            "the preempted run to stop and requeue itself",
            interval=0.5,
        )
        assert "stopping (USR1" in job.output, job.output
        seen = placements(run_dir)
        order = [n.rsplit("-", 1)[0] for n in sorted(seen, key=lambda n: stop_time(seen[n]))]
        assert order == ["simulator", "evaluator", "learner", "paramserver"], seen
        assert "Restarts=1" in slurm.run("scontrol", "show", "job", job.job_id).stdout
    finally:
        slurm.run("scancel", job.job_id, urgent, check=False)
    wait_for_job_end(slurm, job.job_id, 60)


def test_scancel_signal_without_batch_stops_every_task_and_the_job_completes(slurm, tmp_path):
    """`scancel --signal=TERM JOBID` reaches the tasks only: all stop at once, the script
    sees the shards end, and the job is COMPLETED (a clean stop is never FAILED)."""
    run_dir = tmp_path / "run"
    env = fake_env(run_dir, BA3C_CONTAINER="none", BA3C_MINUTES="0")
    job = submit(slurm, tmp_path / "job.out", components(1, 1, 1), env, wait=False)
    wait_for(
        lambda: len(placements(run_dir)) == 4 if (run_dir / "fake").exists() else False,
        120,
        "every component to start",
        interval=0.5,
    )
    slurm.run("scancel", "--signal=TERM", job.job_id)
    assert wait_for_job_end(slurm, job.job_id, 120) == "COMPLETED", job.output
    assert "stopping (the shards ended)" in job.output, job.output
    assert "requeueing" not in job.output
    seen = placements(run_dir)
    assert all(any(x.startswith("stopped") for x in lines) for lines in seen.values()), seen
