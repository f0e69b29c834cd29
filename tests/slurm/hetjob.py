"""Submitting slurm/hetjob.sh to the test cluster with small counts, and reading the result."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.slurm.cluster import Cluster
from tests.support import ROOT

SCRIPT = ROOT / "slurm" / "hetjob.sh"
HERE = Path(__file__).resolve().parent
FAKE_BA3C = HERE / "fake_ba3c.sh"
FAKE_APPTAINER = HERE / "fake_apptainer.sh"


def real_ba3c() -> str:
    """The installed `ba3c` next to this interpreter (what BA3C_BIN points at)."""
    beside = Path(sys.executable).parent / "ba3c"
    return str(beside) if beside.exists() else shutil.which("ba3c") or "ba3c"


def components(ps: int, learners: int, pools: int, evaluators: int = 1) -> list[str]:
    """sbatch options that override the script's task counts, one core per task."""
    blocks = [f"--ntasks={n} --cpus-per-task=1" for n in (ps, learners, pools, evaluators)]
    return " : ".join(blocks).split()


@dataclass
class Job:
    returncode: int
    job_id: str
    output_path: Path

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""


def submit(
    slurm: Cluster,
    out: Path,
    counts: list[str],
    env: dict[str, str],
    args: list[str] = (),
    wait: bool = True,
    timeout: float = 400,
) -> Job:
    """sbatch [--wait] COUNTS slurm/hetjob.sh ARGS with `env` added to the environment."""
    done = slurm.run(
        "sbatch",
        "--parsable",
        *(["--wait"] if wait else []),
        f"--output={out}",
        *counts,
        str(SCRIPT),
        *args,
        env=env,
        timeout=timeout,
        check=False,
    )
    job_id = done.stdout.strip().split(";")[0].splitlines()[0] if done.stdout.strip() else ""
    if not job_id:
        raise AssertionError(f"sbatch failed ({done.returncode}): {done.stderr}")
    return Job(done.returncode, job_id, out)
