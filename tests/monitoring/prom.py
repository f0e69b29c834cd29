"""Test helpers for monitoring: Prometheus' HTTP API, PromQL metric names, exposition types.

`metric_names` pulls the metric names out of a PromQL expression (everything that is not a
function, keyword, label, range, number or string), so a test can check that a dashboard
panel or a rule names only metrics that some process really exports.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request

KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}
# Grafana's variables, replaced by values Prometheus accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$__interval": "15s",
    "$run": ".*",
    "${datasource}": "",
}


class PrometheusAPI:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get(self, path: str, **params: str) -> dict:
        """The decoded JSON reply, errors included (Prometheus answers 400 with a body)."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        try:
            with urllib.request.urlopen(self.url + path + query, timeout=10) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def query(self, expr: str) -> list[dict]:
        reply = self.get("/api/v1/query", query=expr)
        assert reply["status"] == "success", f"{expr!r}: {reply.get('error')}"
        return reply["data"]["result"]

    def values(self, expr: str) -> dict[tuple, float]:
        """{sorted label items: value} of an instant query."""
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in self.query(expr)}

    def rules(self) -> list[dict]:
        reply = self.get("/api/v1/rules")
        assert reply["status"] == "success", reply
        return [rule for group in reply["data"]["groups"] for rule in group["rules"]]

    def active_targets(self) -> list[dict]:
        return self.get("/api/v1/targets", state="active")["data"]["activeTargets"]


def substitute_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (recording-rule names included)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = m.group()
        if token.lower() in KEYWORDS or s[m.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def exposed_names(exposition: str) -> set[str]:
    """Every series name a /metrics text can contain, from its # TYPE lines (so a labelled
    metric that has not been observed yet still counts as exported)."""
    suffixes = {
        "counter": ("",),
        "gauge": ("",),
        "untyped": ("",),
        "info": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    names = set()
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            names.update(parts[2] + s for s in suffixes.get(parts[3], ("",)))
    return names
