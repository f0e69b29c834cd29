"""slurm/hetjob.sh under a real Slurm, with a stand-in `ba3c` (BA3C_BIN) whose services cost
nothing: placement, container command lines, the bound, ordered stop, failure reports."""

from __future__ import annotations

import os
import tomllib

from tests.slurm.cluster import wait_for_job_end
from tests.slurm.hetjob import FAKE_APPTAINER, FAKE_BA3C, components, real_ba3c, submit


def fake_env(run_dir, **extra):
    return {
        "BA3C_BIN": str(FAKE_BA3C),
        "FAKE_BA3C_REAL": real_ba3c(),
        "BA3C_RUN_DIR": str(run_dir),
        **extra,
    }


def placements(run_dir) -> dict[str, list[str]]:
    """{ROLE-INDEX: lines the fake wrote (node=..., stopped TIME)}."""
    return {p.name: p.read_text().splitlines() for p in (run_dir / "fake").iterdir()}


def stop_time(lines: list[str]) -> float:
    return min(float(line.split()[1]) for line in lines if line.startswith("stopped"))


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
    )
    (bin_dir / "ba3c-fake").symlink_to(FAKE_BA3C)
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
    assert f"exec --bind {run_dir} {images}/paramserver.sif ba3c-fake init-run" in lines[0]
    for role in ("paramserver", "learner", "simulator", "evaluator"):
        assert any(
            line.startswith(
                f"exec --bind {run_dir} {images}/{role}.sif ba3c-fake {role} --run-dir {run_dir}"
            )
            for line in lines
        ), (role, lines)

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


def test_a_failed_task_fails_the_job_naming_component_task_and_log(slurm, tmp_path):
    run_dir = tmp_path / "run"
    env = fake_env(run_dir, BA3C_CONTAINER="none", BA3C_MINUTES="5", FAKE_BA3C_FAIL="simulator-1")
    job = submit(slurm, tmp_path / "job.out", components(1, 1, 2), env)
    assert job.returncode == 1, job.output
    assert "FAILED: component 2 (simulator) task 1" in job.output
    assert "exited with code 3" in job.output
    assert f"last lines of {run_dir}/logs/simulator-1.log" in job.output
    assert "the emulator exploded" in job.output
    # Everyone else was stopped rather than left running until the bound.
    seen = placements(run_dir)
    assert all(
        any(x.startswith("stopped") for x in seen[n])
        for n in ("paramserver-0", "learner-0", "simulator-0", "evaluator-0")
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
