"""Builds monitoring/grafana/dashboards/ba3c.json, the ba3c Grafana dashboard, as code.

    python monitoring/grafana/build_dashboard.py          rewrite the JSON next to it
    python monitoring/grafana/build_dashboard.py --check  exit 1 if the JSON is out of date

Edit the panels here, not in the JSON (tests/monitoring checks the two agree, and that
every metric a query names is exported by a running service). Queries use the variables
$datasource (any Prometheus) and $run (one or more runs, from the `run` label that
RUN_DIR/targets/*.json attaches), and the recording rules of monitoring/rules/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "ba3c.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RUN = 'run=~"$run"'
RATE = "$__rate_interval"


def target(expr: str, legend: str, ref: str) -> dict:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": True,
    }


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    unit: str = "short",
    description: str = "",
    width: int = 8,
) -> dict:
    """A time-series panel; `queries` are (PromQL, legend) pairs."""
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": 8},
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 5}},
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "targets": [target(q, legend, chr(ord("A") + i)) for i, (q, legend) in enumerate(queries)],
    }


def score_against_frames() -> dict:
    """Scores with environment frames on the x axis: a trend panel over joined queries."""
    panel = timeseries(
        "Score against environment frames",
        [
            (f'max(ba3c_paramserver_env_frames{{{RUN}, index="0"}})', "frames"),
            (f'max(ba3c_evaluator_score{{{RUN}, stat="mean"}})', "evaluation mean"),
            (f"avg(ba3c_learner_online_return_mean{{{RUN}}})", "online (last 20 episodes)"),
        ],
        description="Evaluation and online scores against the frames shard 0 was told about. "
        "Select one run.",
        width=12,
    )
    panel["type"] = "trend"
    panel["options"]["xField"] = "frames"
    panel["transformations"] = [
        {"id": "joinByField", "options": {"byField": "Time", "mode": "outer"}}
    ]
    return panel


def row(title: str, panels: list[dict]) -> list[dict]:
    return [{"type": "row", "title": title, "collapsed": False, "panels": []}, *panels]


def quantiles(metric: str, by: str = "run") -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{RUN}}}[{RATE}])))",
            f"p{round(q * 100)} {{{{run}}}}",
        )
        for q in (0.5, 0.99)
    ]


def panels() -> list[dict]:
    throughput = row(
        "Throughput",
        [
            timeseries(
                "Environment frames/s",
                [(f"run:ba3c_simulator_env_frames:rate1m{{{RUN}}}", "{{run}}")],
                description="Emulator frames stepped per second by all simulator pools.",
            ),
            timeseries(
                "Training samples/s",
                [(f"run:ba3c_learner_samples_trained:rate1m{{{RUN}}}", "{{run}}")],
                description="Transitions trained on per second by all learners.",
            ),
            timeseries(
                "Train steps/s per learner",
                [(f"run_index:ba3c_learner_train_steps:rate1m{{{RUN}}}", "learner-{{index}}")],
                description="Gradient pushes per second of each learner.",
            ),
            timeseries(
                "Agent steps/s", [(f"run:ba3c_simulator_agent_steps:rate1m{{{RUN}}}", "{{run}}")]
            ),
            timeseries(
                "Learner queue (transitions waiting)",
                [(f"ba3c_learner_queue_depth{{{RUN}}}", "learner-{{index}}")],
            ),
            timeseries(
                "Predictor batch size (median)",
                [
                    (
                        f"histogram_quantile(0.5, sum by (index, le) "
                        f"(rate(ba3c_learner_predict_batch_size_bucket{{{RUN}}}[{RATE}])))",
                        "learner-{{index}}",
                    )
                ],
            ),
        ],
    )
    learning = row(
        "Learning",
        [
            score_against_frames(),
            timeseries(
                "Scores over time",
                [
                    (f'ba3c_evaluator_score{{{RUN}, stat="mean"}}', "evaluation mean"),
                    (f'ba3c_evaluator_score{{{RUN}, stat="max"}}', "evaluation max"),
                    (f"ba3c_learner_online_return_mean{{{RUN}}}", "online learner-{{index}}"),
                ],
                width=12,
            ),
            timeseries("Losses", [(f"ba3c_learner_loss{{{RUN}}}", "{{part}} learner-{{index}}")]),
            timeseries(
                "Policy entropy", [(f"ba3c_learner_policy_entropy{{{RUN}}}", "learner-{{index}}")]
            ),
            timeseries(
                "Gradient norm",
                [(f"ba3c_learner_grad_norm{{{RUN}}}", "{{stage}} learner-{{index}}")],
            ),
        ],
    )
    parameter_servers = row(
        "Parameter servers",
        [
            timeseries(
                "Shard versions",
                [
                    (f"ba3c_paramserver_version{{{RUN}}}", "shard {{index}}"),
                    (f"ba3c_evaluator_version{{{RUN}}}", "evaluated"),
                ],
            ),
            timeseries(
                "Pushes/s: applied vs dropped",
                [
                    (f"run:ba3c_paramserver_pushes_applied:rate1m{{{RUN}}}", "applied"),
                    (
                        f"run_reason:ba3c_paramserver_pushes_dropped:rate1m{{{RUN}}}",
                        "dropped ({{reason}})",
                    ),
                ],
            ),
            timeseries(
                "Staleness (versions)",
                [
                    *quantiles("ba3c_paramserver_staleness_versions")[:1],
                    (f"run:ba3c_paramserver_staleness_versions:p99_1m{{{RUN}}}", "p99 {{run}}"),
                ],
                description="Shard version at a push's arrival minus the version it was computed "
                "at.",
            ),
            timeseries(
                "Policy lag (learner side)",
                [
                    *quantiles("ba3c_learner_policy_lag_versions"),
                    (f"run:ba3c_learner_policy_lag_seconds:p50_1m{{{RUN}}}", "p50 s {{run}}"),
                ],
                description="Per trained transition: parameter versions (and seconds) between "
                "the policy that chose its action and the parameters it is trained with. Beside "
                "staleness: lag is what the pools' data costs, staleness what the push costs.",
            ),
            timeseries(
                "PushPull latency (learner side)",
                [
                    (f"run:ba3c_learner_pushpull_seconds:p50_1m{{{RUN}}}", "p50 {{run}}"),
                    (f"run:ba3c_learner_pushpull_seconds:p99_1m{{{RUN}}}", "p99 {{run}}"),
                ],
                unit="s",
            ),
            timeseries(
                "Sync aggregation wait",
                quantiles("ba3c_paramserver_aggregation_wait_seconds"),
                unit="s",
                description="Sync mode: from a round's first push until it was applied.",
            ),
            timeseries(
                "Bytes/s",
                [
                    (
                        "sum by (direction) "
                        f"(rate(ba3c_learner_pushpull_bytes_total{{{RUN}}}[{RATE}]))",
                        "learners {{direction}}",
                    ),
                    (
                        f"sum(rate(ba3c_paramserver_received_bytes_total{{{RUN}}}[{RATE}]))",
                        "shards received",
                    ),
                    (
                        f"sum(rate(ba3c_paramserver_sent_bytes_total{{{RUN}}}[{RATE}]))",
                        "shards sent",
                    ),
                ],
                unit="Bps",
            ),
        ],
    )
    health = row(
        "Health",
        [
            timeseries(
                "Processes up",
                [(f'up{{job="ba3c", {RUN}}}', "{{role}}-{{index}}")],
                description="1 while Prometheus can scrape the process.",
            ),
            timeseries(
                "Restarts in the selected range",
                [
                    (
                        "sum by (run, role, index) "
                        f'(changes(process_start_time_seconds{{job="ba3c", {RUN}}}'
                        f"[$__range]) + 1) - 1",
                        "{{role}}-{{index}}",
                    )
                ],
                description="A restarted process has a new start time (and usually a new port, "
                "hence a new instance).",
            ),
            timeseries(
                "Live learners and pools",
                [
                    (f"min(ba3c_paramserver_live_learners{{{RUN}}})", "live learners (shard view)"),
                    (f"sum(ba3c_learner_pools_connected{{{RUN}}})", "pools connected to learners"),
                    (f"sum(ba3c_simulator_connected{{{RUN}}})", "pools with an open stream"),
                ],
            ),
        ],
    )
    return [*throughput, *learning, *parameter_servers, *health]


def layout(items: list[dict]) -> list[dict]:
    """Assigns ids and grid positions: rows span the width, panels fill left to right."""
    x = y = 0
    row_height = 0
    for panel_id, item in enumerate(items, start=1):
        item["id"] = panel_id
        if item["type"] == "row":
            y += row_height
            item["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
            x, y, row_height = 0, y + 1, 0
            continue
        w, h = item["gridPos"]["w"], item["gridPos"]["h"]
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        item["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_height = max(row_height, h)
    return items


def dashboard() -> dict:
    run_query = 'label_values(up{job="ba3c"}, run)'
    return {
        "uid": "ba3c-run",
        "title": "ba3c run",
        "description": "Batch-A3C training: throughput, learning, parameter servers, health.",
        "tags": ["ba3c"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "run",
                    "label": "Run",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": run_query,
                    "query": {"query": run_query, "refId": "runs"},
                    "refresh": 2,
                    "sort": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": layout(panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
