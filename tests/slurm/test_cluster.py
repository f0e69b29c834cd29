"""The harness itself: a heterogeneous job spreads its components over distinct nodes,
and `sbatch --wait` returns the batch script's exit code."""

from __future__ import annotations

import textwrap


def write_hetjob(path, body: str):
    path.write_text(
        textwrap.dedent("""\
        #!/bin/bash
        #SBATCH --ntasks=1 --cpus-per-task=1
        #SBATCH hetjob
        #SBATCH --ntasks=1 --cpus-per-task=1
        #SBATCH hetjob
        #SBATCH --ntasks=2 --cpus-per-task=1
        #SBATCH hetjob
        #SBATCH --ntasks=1 --cpus-per-task=1
        """)
        + textwrap.dedent(body)
    )
    return path


def test_hetjob_components_land_on_their_own_nodes(slurm, tmp_path):
    out = tmp_path / "nodes"
    script = write_hetjob(
        tmp_path / "job.sh",
        f"""\
        for g in 0 1 2 3; do
          srun --het-group=$g bash -c 'echo "$0 $SLURM_PROCID $SLURMD_NODENAME"' $g >> {out} &
        done
        wait
        """,
    )
    done = slurm.run(
        "sbatch", "--wait", f"--output={tmp_path}/job.out", str(script), timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr + (tmp_path / "job.out").read_text()
    rows = [line.split() for line in out.read_text().splitlines()]
    node_of = {}
    for group, _task, node in rows:
        node_of.setdefault(group, set()).add(node)
    assert sorted((g, t) for g, t, _ in rows) == [
        ("0", "0"),
        ("1", "0"),
        ("2", "0"),
        ("2", "1"),
        ("3", "0"),
    ]
    assert all(len(nodes) == 1 for nodes in node_of.values()), node_of
    assert len({n for nodes in node_of.values() for n in nodes}) == 4, node_of


def test_sbatch_wait_returns_the_scripts_exit_code(slurm, tmp_path):
    script = write_hetjob(tmp_path / "job.sh", "exit 7\n")
    done = slurm.run(
        "sbatch", "--wait", f"--output={tmp_path}/job.out", str(script), timeout=120, check=False
    )
    assert done.returncode == 7, done.stdout + done.stderr
