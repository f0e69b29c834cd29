"""A real Prometheus, configured from monitoring/, next to a short real run (`ba3c train`
on CartPole: two shards, a learner, a pool, the evaluator): every process is found and up,
the figures the dashboard shows are there and moving, and every metric a panel or rule
names is exported by some running service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monitoring.prom import exposed_names, metric_names
from tests.monitoring.test_config import dashboard_queries
from tests.support import Process, ba3c_command, wait_for
from tests.support.metrics import scrape_address

ROLES = {
    ("paramserver", "0"),
    ("paramserver", "1"),
    ("learner", "0"),
    ("simulator", "0"),
    ("evaluator", "0"),
}
RUN_ARGS = [
    "-e",
    "CartPole-v1",
    "--ps",
    "2",
    "--learners",
    "1",
    "--pools",
    "1",
    "--eval_every",
    "3",
    "--eval_episodes",
    "2",
    "--minutes",
    "4",
    "--plain",
    "--progress-every",
    "5",
]


@pytest.fixture(scope="module")
def live_run(prometheus, tmp_path_factory) -> Iterator[Path]:
    """`ba3c train` in the directory the session's Prometheus watches, until all its
    processes are scraped."""
    logs = tmp_path_factory.mktemp("live-logs")
    train = Process(
        ba3c_command("train", "--run-dir", str(prometheus.run_path), *RUN_ARGS), logs / "train.out"
    )
    try:
        wait_for(
            lambda: up_processes(prometheus) >= ROLES or not train.alive(),
            120,
            "Prometheus to scrape every process of the run",
        )
        assert train.alive(), train.output()[-3000:]
        yield prometheus.run_path
    finally:
        code = train.stop(timeout=60)
        print(f"----- ba3c train (exit {code}) -----\n{train.output()[-4000:]}")


def up_processes(prometheus) -> set[tuple[str, str]]:
    return {
        (labels["role"], labels["index"])
        for labels, value in labelled(prometheus.api.values('up{job="ba3c"}'))
        if value == 1
    }


def labelled(values: dict[tuple, float]) -> list[tuple[dict, float]]:
    return [(dict(key), value) for key, value in values.items()]


def published_targets(run_path: Path) -> dict[tuple[str, str], str]:
    """(role, index) -> address, from the run's target files."""
    out = {}
    for path in (run_path / "targets").glob("*.json"):
        entry = json.loads(path.read_text())[0]
        out[(entry["labels"]["role"], entry["labels"]["index"])] = entry["targets"][0]
    return out


def test_prometheus_finds_every_process_of_the_run_up(live_run, prometheus):
    targets = published_targets(live_run)
    assert set(targets) >= ROLES
    up = labelled(prometheus.api.values('up{job="ba3c"}'))
    by_process = {(labels["role"], labels["index"]): (labels, value) for labels, value in up}
    for process, address in targets.items():
        labels, value = by_process[process]
        assert value == 1, f"{process} is not up"
        assert labels["instance"] == address and labels["run"] == live_run.name


def test_series_carry_run_role_index_and_nothing_is_renamed(live_run, prometheus):
    api = prometheus.api
    assert api.query('count({job="ba3c", __name__=~"ba3c_.+"})'), "no ba3c series at all"
    for label in ("run", "role", "index", "instance", "job"):
        clashing = api.query(f'{{job="ba3c", exported_{label}=~".+"}}')
        assert not clashing, f"a metric has its own {label!r} label: {clashing[0]['metric']}"
        missing = api.query(f'{{job="ba3c", {label}=""}}')
        assert not missing, f"a series lacks {label!r}: {missing[0]['metric']}"


def test_the_dashboards_figures_are_there_and_moving(live_run, prometheus):
    api = prometheus.api
    positive = [
        "run:ba3c_simulator_env_frames:rate1m",
        "run:ba3c_learner_samples_trained:rate1m",
        "run:ba3c_simulator_agent_steps:rate1m",
        "run_index:ba3c_learner_train_steps:rate1m",
        "run:ba3c_paramserver_pushes_applied:rate1m",
        "run:ba3c_learner_pushpull_seconds:p50_1m",
        "run:ba3c_learner_pushpull_seconds:p99_1m",
    ]
    for expr in positive:
        wait_for(
            lambda e=expr: any(v > 0 for v in api.values(e).values()), 60, f"{expr} to be positive"
        )
    wait_for(
        lambda: api.query("run:ba3c_paramserver_staleness_versions:p99_1m"),
        60,
        "staleness p99 to be recorded",
    )
    counters = [
        "ba3c_simulator_env_frames_total",
        "ba3c_learner_train_steps_total",
        "ba3c_learner_samples_trained_total",
        "ba3c_paramserver_version",
    ]
    before = {expr: api.values(expr) for expr in counters}
    assert len(before["ba3c_paramserver_version"]) == 2, "expected one version per shard"
    for expr, first in before.items():
        assert first, f"{expr} is empty"

        def moved(expr=expr, first=first) -> bool:
            now = api.values(expr)
            return all(now.get(key, float("-inf")) > value for key, value in first.items())

        wait_for(moved, 30, f"every series of {expr} to grow")
    wait_for(
        lambda: api.query('ba3c_evaluator_score{stat="mean"}'),
        90,
        "an evaluation score to be scraped",
    )


def test_every_metric_a_panel_or_rule_names_is_exported(live_run, prometheus):
    targets = published_targets(live_run)
    assert {role for role, _ in targets} == {role for role, _ in ROLES}
    exported = {"up"}
    for address in targets.values():
        exported |= exposed_names(scrape_address(address).text)
    rules = prometheus.api.rules()
    recorded = {r["name"] for r in rules if r["type"] == "recording"}
    queries = [*dashboard_queries(), *((f"rule {r['name']}", r["query"]) for r in rules)]
    unknown = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - exported - recorded
        if missing:
            unknown[where] = sorted(missing)
    assert not unknown, f"queries naming metrics no running service exports: {unknown}"
    # Every recording rule the dashboard reads is computed from live data (dropped pushes
    # only exist once a push was dropped, which an async run without a bound never does).
    used = {n for _, expr in dashboard_queries() for n in metric_names(expr)} & recorded
    used -= {"run_reason:ba3c_paramserver_pushes_dropped:rate1m"}
    wait_for(
        lambda: all(prometheus.api.query(name) for name in used),
        60,
        f"every recording rule the dashboard reads to have data: {sorted(used)}",
    )
