"""How the evaluator reads the shards: the shared `ba3c.paramserver_client` as EVALUATOR
(Register, then Pull; it never writes to a shard), with the evaluator's pull metrics.

Each shard is pulled with PullRequest.have_version set to what the evaluator already holds,
so an unchanged shard sends no parameters. Waiting, retrying and following a shard that
moved are the client's (see its docstring).
"""

from __future__ import annotations

import threading

import prometheus_client as prom

from ba3c.paramserver_client import Hooks, ParamServerClient
from ba3c.rundir import RunDir
from ba3c.sharding import Assignment
from ba3c.v1 import paramserver_pb2 as ps

PULLS = prom.Counter(
    "ba3c_evaluator_pulls_total",
    "Pull calls to the shards, by outcome (new or unchanged).",
    ["outcome"],
)
PULL_SECONDS = prom.Histogram("ba3c_evaluator_pull_seconds", "Latency of one Pull call.")
PULL_BYTES = prom.Counter(
    "ba3c_evaluator_pull_bytes_total", "Bytes of Pull replies that carried parameters."
)


def _pulled(reply: ps.PullResponse, received: int, seconds: float) -> None:
    PULL_SECONDS.observe(seconds)
    if reply.unchanged:
        PULLS.labels("unchanged").inc()
        return
    PULLS.labels("new").inc()
    PULL_BYTES.inc(received)


def shard_reader(
    run_dir: RunDir,
    token: str,
    assignment: Assignment,
    client_id: str,
    max_message_bytes: int,
    rpc_timeout: float,
    stop: threading.Event,
) -> ParamServerClient:
    """A client of every shard that only reads (`read()`, `versions()`)."""
    return ParamServerClient(
        run_dir,
        token,
        assignment,
        client_id,
        ps.EVALUATOR,
        stop,
        rpc_timeout=rpc_timeout,
        max_message_bytes=max_message_bytes,
        hooks=Hooks(pulled=_pulled),
    )
