"""Prometheus metrics of a parameter-server shard (declared once, here).

No run/role/index labels: Prometheus attaches them from RUN_DIR/targets/.
"""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

VERSION = Gauge("ba3c_paramserver_version", "Current version (global step) of the shard.")
ENV_FRAMES = Gauge(
    "ba3c_paramserver_env_frames",
    "Environment frames the shard has been told about (restored on resume).",
)
PUSHES_APPLIED = Counter(
    "ba3c_paramserver_pushes_applied_total", "Pushes whose gradients changed the parameters."
)
PUSHES_DROPPED = Counter(
    "ba3c_paramserver_pushes_dropped_total",
    "Pushes dropped, by reason (stale, surplus).",
    ["reason"],
)
PUSHES_REPEATED = Counter(
    "ba3c_paramserver_pushes_repeated_total",
    "Pushes whose idempotency key was handled before: answered with the first outcome, "
    "not applied again.",
)
REJECTED = Counter(
    "ba3c_paramserver_rejected_total",
    "Calls refused with an error status, by method and status code.",
    ["method", "code"],
)
STALENESS = Histogram(
    "ba3c_paramserver_staleness_versions",
    "Shard version at arrival minus the version a push was computed at.",
    buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128),
)
AGGREGATION_WAIT = Histogram(
    "ba3c_paramserver_aggregation_wait_seconds",
    "Sync mode: from a round's first push until it was applied.",
    buckets=_LATENCY_BUCKETS,
)
ROUND_PUSHES = Histogram(
    "ba3c_paramserver_round_pushes",
    "Sync mode: pushes averaged per applied round.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
ROUND_WAITING = Gauge(
    "ba3c_paramserver_round_waiting_pushes",
    "Sync mode: pushes in the open round, waiting for it to be applied.",
)
ROUND_TIMEOUTS = Counter(
    "ba3c_paramserver_round_timeouts_total",
    "Sync rounds applied short of replicas_to_aggregate after sync_timeout.",
)
RECEIVED_BYTES = Counter(
    "ba3c_paramserver_received_bytes_total", "Request bytes received, by method.", ["method"]
)
SENT_BYTES = Counter(
    "ba3c_paramserver_sent_bytes_total", "Reply bytes sent, by method.", ["method"]
)
LIVE_LEARNERS = Gauge("ba3c_paramserver_live_learners", "Learners whose lease is valid.")
CHECKPOINT_SECONDS = Histogram(
    "ba3c_paramserver_checkpoint_seconds", "Time to write one checkpoint.", buckets=_LATENCY_BUCKETS
)
CHECKPOINT_VERSION = Gauge(
    "ba3c_paramserver_checkpoint_version",
    "Version of the newest checkpoint written or restored (-1: none).",
)
PUSHPULL_SECONDS = Histogram(
    "ba3c_paramserver_pushpull_seconds",
    "PushPull latency on the server (includes sync waiting).",
    buckets=_LATENCY_BUCKETS,
)
PULL_SECONDS = Histogram(
    "ba3c_paramserver_pull_seconds", "Pull latency on the server.", buckets=_LATENCY_BUCKETS
)
PARAMETERS = Gauge("ba3c_paramserver_parameters", "Number of float32 parameters on the shard.")
