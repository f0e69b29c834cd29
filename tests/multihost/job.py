"""slurm/hetjob.sh on the namespace hosts: where each component goes, submitting the job,
and reading the services' state from the host side or from inside a host.

Placement: component 0 (the shards) on ba3c-h1, 1 (learners) on ba3c-h2, 2 (one pool per
node) on ba3c-h3 and ba3c-h4, 3 (the evaluator) on host 4 too, through its second slurmd
(Slurm refuses hetjob components that ask for the same node).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ba3c.rundir import RunDir
from tests.learner.cluster import shard_status
from tests.multihost.cluster import EXTRA_NODE, HOSTS, Host, MultiHostCluster, wait_for_job_end
from tests.slurm.hetjob import Job, real_ba3c, submit

H1, H2, H3, H4 = HOSTS
POOL_HOSTS = (H3, H4)


def components(ps: int, learners: int) -> list[str]:
    """sbatch options placing the four components as above, one core per task."""
    blocks = [
        f"--nodelist={H1.name} --ntasks={ps}",
        f"--nodelist={H2.name} --ntasks={learners}",
        f"--nodes=2 --nodelist={H3.name},{H4.name} --ntasks=2 --ntasks-per-node=1",
        f"--nodelist={EXTRA_NODE} --ntasks=1",
    ]
    return " : ".join(f"{b} --cpus-per-task=1" for b in blocks).split()


def host_of(role: str, index: int) -> Host:
    """The host that service ROLE-INDEX runs on under `components`."""
    return {"paramserver": H1, "learner": H2, "evaluator": H4}.get(role) or POOL_HOSTS[index]


def exposed(metric) -> str:
    """The sample name a prometheus_client metric object is served under (counters end in
    _total); tests name metrics through the services' own objects, so renames follow."""
    family = metric.describe()[0]
    return family.name + "_total" if family.type == "counter" else family.name


def value_of(text: str, name: str, **labels: str) -> float:
    """Sum of the samples `name` on an exposition whose labels include `labels` (0 if none)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


FETCH = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


@dataclass
class RunningJob:
    """A submitted hetjob and its run directory."""

    cluster: MultiHostCluster
    job: Job
    run_dir: RunDir

    @property
    def output(self) -> str:
        return self.job.output

    def metrics_address(self, role: str, index: int) -> str:
        entry = json.loads(self.run_dir.target_path(role, index).read_text())
        return entry[0]["targets"][0]

    def exposition(self, role: str, index: int = 0, inside: bool = False) -> str:
        """ROLE-INDEX's /metrics page, scraped from the host side over the bridge, or
        `inside` its own host (which works with the host's link down)."""
        url = f"http://{self.metrics_address(role, index)}/metrics"
        if inside:
            host = host_of(role, index)
            return self.cluster.in_namespace(host, sys.executable, "-c", FETCH, url)
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def metric(
        self, role: str, name: str, index: int = 0, inside: bool = False, **labels: str
    ) -> float:
        return value_of(self.exposition(role, index, inside), name, **labels)

    def shard(self, index: int):
        """The shard's StatusResponse, asked from the host side."""
        return shard_status(self.run_dir, index)

    def evaluations(self) -> list[dict]:
        path = self.run_dir.path / "eval.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(x) for x in lines if x.strip()]

    def cancel(self) -> str:
        """scancel and wait until every process of the job is gone; the first state."""
        self.cluster.run("scancel", self.job.job_id, check=False)
        return wait_for_job_end(self.cluster, self.job.job_id, 120)


def start_job(
    cluster: MultiHostCluster,
    folder: Path,
    args: list[str],
    ps: int = 2,
    learners: int = 1,
    env: dict[str, str] | None = None,
) -> RunningJob:
    """Submits slurm/hetjob.sh with the real services (no container), running until
    cancelled, on run directory FOLDER/run; returns without waiting."""
    run_dir = folder / "run"
    job = submit(
        cluster,
        folder / "job.out",
        components(ps, learners),
        {
            "BA3C_BIN": real_ba3c(),
            "BA3C_CONTAINER": "none",
            "BA3C_RUN_DIR": str(run_dir),
            "BA3C_MINUTES": "0",
            "BA3C_STOP_GRACE": "20",
            **(env or {}),
        },
        args=args,
        wait=False,
    )
    return RunningJob(cluster, job, RunDir(run_dir))


def listening_addresses(cluster: MultiHostCluster, host: Host) -> set[str]:
    """local address:port of every listening TCP socket on `host` (from `ss`), IPv4-mapped
    IPv6 addresses (gRPC's) written as IPv4."""
    out = cluster.in_namespace(host, "ss", "-Htln")
    local = [line.split()[3] for line in out.splitlines() if line.strip()]
    return {a.replace("[::ffff:", "").replace("]", "") for a in local}
