"""The monitoring files as Prometheus and Grafana read them: promtool accepts them, the
alerts fire when they should, every query parses, the dashboard is built from its code,
and `ba3c monitor` serves a run and stops on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import prometheus_client
import pytest

from ba3c.rundir import RunDir
from ba3c.tools import monitor
from tests.monitoring.prom import (
    PrometheusAPI,
    metric_names,
    substitute_grafana_variables,
)
from tests.support import ROOT, ba3c_command, wait_for

MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "ba3c.json"


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of the run variable's label_values()."""
    board = json.loads(DASHBOARD.read_text())
    out = [
        (f"panel {p['title']!r}", t["expr"]) for p in board["panels"] for t in p.get("targets", [])
    ]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["definition"])
            assert inner, f"variable {var['name']}: expected label_values(SELECTOR, LABEL)"
            out.append((f"variable {var['name']!r}", inner.group(1)))
    return out


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_accepts_the_config_and_the_rules(promtool, tmp_path):
    checked = run(promtool, "check", "config", str(MONITORING / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = sorted(str(p) for p in (MONITORING / "rules").glob("*.yml"))
    assert len(rules) >= 2
    checked = run(promtool, "check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The configuration `ba3c monitor` generates is just as valid, and loads the rules.
    generated = tmp_path / "prometheus.yml"
    generated.write_text(monitor.config_for_runs([tmp_path / "some-run"]))
    checked = run(promtool, "check", "config", str(generated))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"SUCCESS: \d+ rules found", checked.stdout), checked.stdout


def test_alerts_fire_when_work_stops_and_only_then(promtool):
    """monitoring/tests/rules_test.yml feeds series to every alert and recording rule."""
    tested = run(promtool, "test", "rules", "rules_test.yml", cwd=MONITORING / "tests")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for r in _rules_in(MONITORING / "rules" / "alerts.yml")}
    tested_names = set(
        re.findall(r"alertname: (\w+)", (MONITORING / "tests" / "rules_test.yml").read_text())
    )
    assert alerts <= tested_names, f"alerts without a unit test: {sorted(alerts - tested_names)}"


def _rules_in(path) -> list[dict]:
    """The `alert:`/`record:` names of a rules file (enough YAML for our own files)."""
    return [
        {m.group(1): m.group(2)}
        for m in re.finditer(r"^\s*- (alert|record): (\S+)", path.read_text(), re.M)
    ]


def test_every_dashboard_query_and_rule_parses_and_names_a_metric(prometheus):
    rules = prometheus.api.rules()
    assert {r["name"] for r in rules} >= {
        "run:ba3c_simulator_env_frames:rate1m",
        "run:ba3c_learner_samples_trained:rate1m",
        "run:ba3c_learner_pushpull_seconds:p50_1m",
        "run:ba3c_learner_pushpull_seconds:p99_1m",
        "run:ba3c_paramserver_staleness_versions:p99_1m",
        "run:ba3c_learner_policy_lag_versions:p50_1m",
        "run:ba3c_learner_policy_lag_seconds:p50_1m",
        "BA3CLearnerStoppedPushing",
        "BA3CShardVersionStuck",
        "BA3CNoFrames",
        "BA3CEvalScoreCollapse",
    }
    assert all(r["health"] != "err" for r in rules), [r for r in rules if r["health"] == "err"]
    queries = dashboard_queries()
    assert len(queries) >= 20
    for where, expr in queries:
        reply = prometheus.api.get("/api/v1/query", query=substitute_grafana_variables(expr))
        assert reply["status"] == "success", f"{where}: {expr!r}: {reply.get('error')}"
        assert metric_names(expr), f"{where}: {expr!r} names no metric"


def test_a_broken_query_is_reported_as_such(prometheus):
    """The parse check above can fail: Prometheus refuses malformed PromQL."""
    reply = prometheus.api.get("/api/v1/query", query="sum by (run (rate(x[1m]))")
    assert reply["status"] == "error" and reply["errorType"] == "bad_data"


def test_metric_names_are_read_from_promql():
    expr = (
        'histogram_quantile(0.99, sum by (run, le) (rate(foo_seconds_bucket{a="b{c}"}'
        "[$__rate_interval]))) > on (run) group_left bar:baz:rate1m offset 5m "
        'unless up{job="x"} == bool 1e3'
    )
    assert metric_names(expr) == {"foo_seconds_bucket", "bar:baz:rate1m", "up"}


def test_dashboard_has_a_datasource_variable_a_run_selector_and_the_rows():
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["run"]["multi"] and variables["run"]["includeAll"]
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Throughput", "Learning", "Parameter servers", "Health"]
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'run=~"$run"' in t["expr"], f"{panel['title']}: {t['expr']} ignores $run"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_json_is_what_its_builder_writes():
    checked = run(sys.executable, str(MONITORING / "grafana" / "build_dashboard.py"), "--check")
    assert checked.returncode == 0, checked.stderr


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards():
    datasources = (MONITORING / "grafana/provisioning/datasources/ba3c.yml").read_text()
    assert "type: prometheus" in datasources
    dashboards = (MONITORING / "grafana/provisioning/dashboards/ba3c.yml").read_text()
    assert "type: file" in dashboards and "path:" in dashboards


# -- ba3c monitor ------------------------------------------------------------------------------


def test_monitor_prints_a_config_watching_the_run(tmp_path, promtool):
    run_dir = tmp_path / "my-run"
    run_dir.mkdir()
    out = run(
        *ba3c_command(
            "monitor", "--run-dir", str(run_dir), "--print-config", "--scrape-interval", "2s"
        )
    )
    assert out.returncode == 0, out.stderr
    assert f'"{run_dir}/targets/*.json"' in out.stdout
    assert f'"{MONITORING}/rules/*.yml"' in out.stdout
    assert "scrape_interval: 2s" in out.stdout and "scrape_timeout: 2s" in out.stdout
    assert monitor.TARGETS_PLACEHOLDER not in out.stdout
    (tmp_path / "p.yml").write_text(out.stdout)
    assert run(promtool, "check", "config", str(tmp_path / "p.yml")).returncode == 0


def test_an_installed_package_carries_the_files_monitor_needs(tmp_path):
    """pyproject.toml installs monitoring/ under PREFIX/share/ba3c/monitoring (no checkout
    there), and `monitor` looks there when the checkout's folder is missing."""
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    installed = {
        str(Path(folder) / path.name)
        for folder, patterns in data_files.items()
        for pattern in patterns
        for path in ROOT.glob(pattern)
    }
    share = Path("share/ba3c/monitoring")
    needed = ["prometheus.yml", *(f"rules/{p.name}" for p in (MONITORING / "rules").glob("*.yml"))]
    assert {str(share / n) for n in needed} <= installed
    checkout, prefix = tmp_path / "checkout", tmp_path / "prefix"
    (prefix / "rules").mkdir(parents=True)
    (prefix / "prometheus.yml").write_text("")
    assert monitor.monitoring_dir([checkout, prefix]) == prefix
    assert monitor.monitoring_dir([checkout]) == checkout  # then the error names it


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run-dir", "/nonexistent/run"], "run directory /nonexistent/run does not exist"),
        (["--scrape-interval", "fast"], "--scrape-interval 'fast' is not a Prometheus duration"),
        (["--prometheus", "/nonexistent/prometheus"], "apt-get install"),
        (["--port", "70000"], "--port must be in 0..65535"),
    ],
)
def test_monitor_refuses_bad_usage_in_one_line(tmp_path, args, message):
    if "--run-dir" not in args:
        args = ["--run-dir", str(tmp_path), *args]
    out = run(*ba3c_command("monitor", *args))
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "monitoring").exists()


def test_monitor_scrapes_the_run_and_stops_on_ctrl_c(tmp_path, processes):
    run_dir = RunDir(tmp_path / "watched-run").ensure()
    registry = prometheus_client.CollectorRegistry()
    frames = prometheus_client.Counter(
        "ba3c_simulator_env_frames_total", "frames", registry=registry
    )
    frames.inc(1234)
    server, _ = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        run_dir.write_target("simulator", 3, f"127.0.0.1:{server.server_port}")
        proc = processes(
            "monitor",
            "monitor",
            "--run-dir",
            str(run_dir.path),
            "--port",
            "0",
            "--scrape-interval",
            "1s",
        )
        url = wait_for(
            lambda: re.search(r"http://127\.0\.0\.1:\d+", proc.output()),
            30,
            "ba3c monitor to print its URL",
        ).group()
        api = PrometheusAPI(url)
        labels = {"run": "watched-run", "role": "simulator", "index": "3", "job": "ba3c"}
        found = wait_for(
            lambda: api.query("ba3c_simulator_env_frames_total"),
            30,
            "Prometheus to scrape the run's simulator target",
        )
        assert labels.items() <= found[0]["metric"].items()
        assert float(found[0]["value"][1]) == 1234
        assert (run_dir.path / "monitoring" / "prometheus.yml").exists()
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(30) == 0, proc.output()
        assert "Prometheus stopped." in proc.output()
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/-/ready", timeout=2)
    finally:
        server.shutdown()
