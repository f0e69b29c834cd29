"""Reading a process's /metrics in tests and benchmarks: one scrape, one way to look up a value.

    scrape(run_dir, "learner", 0).value("ba3c_learner_train_steps_total")
    scrape(run_dir, "evaluator").value("ba3c_evaluator_pulls_total", outcome="unchanged")

`value` sums every sample of that name whose labels include the given ones (0.0 when there is
none), so a labelled counter can be read whole or by label; `has` tells a missing metric from
a zero.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ba3c.rundir import RunDir


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Metrics:
    """One scrape of a /metrics endpoint: its text and its samples."""

    def __init__(self, text: str):
        self.text = text
        self.samples = [
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def _matching(self, name: str, labels: dict[str, str]) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == str(v) for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` that carry `labels` (0.0 if there is none)."""
        return sum(s.value for s in self._matching(name, labels))

    def has(self, name: str, **labels: str) -> bool:
        return bool(self._matching(name, labels))

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def target_address(run_dir: RunDir, role: str, index: int = 0) -> str:
    """host:port of ROLE-INDEX's /metrics, from the file_sd entry it published."""
    entry = json.loads(run_dir.target_path(role, index).read_text())
    return entry[0]["targets"][0]


def scrape_address(address: str, timeout: float = 10) -> Metrics:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as reply:
        return Metrics(reply.read().decode())


def scrape(run_dir: RunDir, role: str, index: int = 0, timeout: float = 10) -> Metrics:
    """The /metrics of process ROLE-INDEX of the run."""
    return scrape_address(target_address(run_dir, role, index), timeout)
