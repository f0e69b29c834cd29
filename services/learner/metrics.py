"""The learner's Prometheus metrics, declared once (Prometheus adds run/role/index)."""

from prometheus_client import Counter, Gauge, Histogram

from ba3c.paramserver_client import Hooks

AGENT_STEPS = Counter(
    "ba3c_learner_agent_steps_total",
    "Agent steps (one per environment per Act request) received from pools.",
)
ENV_FRAMES = Counter("ba3c_learner_env_frames_total", "Emulator frames reported by the pools.")
SAMPLES_TRAINED = Counter("ba3c_learner_samples_trained_total", "Transitions trained on.")
TRAIN_STEPS = Counter("ba3c_learner_train_steps_total", "Training steps (gradient pushes).")
LOSS = Gauge("ba3c_learner_loss", "Loss parts of the latest training batch.", ["part"])
ENTROPY = Gauge("ba3c_learner_policy_entropy", "Mean policy entropy of the latest batch.")
GRAD_NORM = Gauge("ba3c_learner_grad_norm", "Global gradient norm of the latest batch.", ["stage"])
ADVANTAGE = Gauge("ba3c_learner_advantage_mean", "Mean advantage of the latest batch.")
PREDICT_BATCH = Histogram(
    "ba3c_learner_predict_batch_size",
    "Observations per forward pass.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
QUEUE_DEPTH = Gauge("ba3c_learner_queue_depth", "Transitions waiting for the trainer.")
POOLS = Gauge(
    "ba3c_learner_pools_connected",
    "Simulator pools with an open Act stream (a double-buffered pool's two streams count once).",
)
PUSHPULL_SECONDS = Histogram(
    "ba3c_learner_pushpull_seconds",
    "Latency of one PushPull call to one shard.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PUSHPULL_BYTES = Counter(
    "ba3c_learner_pushpull_bytes_total", "Bytes of PushPull messages.", ["direction"]
)
PUSHPULL_FAILURES = Counter(
    "ba3c_learner_pushpull_failures_total",
    "PushPull calls that failed and were retried or dropped.",
    ["code"],
)
STALENESS = Histogram(
    "ba3c_learner_parameter_staleness",
    "Shard versions between computing a gradient and applying it.",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128),
)
POLICY_LAG_VERSIONS = Histogram(
    "ba3c_learner_policy_lag_versions",
    "Per trained transition: parameter versions between the policy that chose its action "
    "and the parameters its gradient is computed with.",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
)
POLICY_LAG_SECONDS = Histogram(
    "ba3c_learner_policy_lag_seconds",
    "Per trained transition: seconds between choosing its action and computing its gradient.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
VERSION = Gauge(
    "ba3c_learner_parameter_version", "Lowest shard version of the parameters the learner holds."
)
EPISODES = Counter("ba3c_learner_online_episodes_total", "Episodes finished in the pools.")
EPISODE_RETURN = Histogram(
    "ba3c_learner_online_episode_return",
    "Unclipped returns of episodes finished in the pools.",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1000),
)
RETURN_MEAN = Gauge(
    "ba3c_learner_online_return_mean",
    "Mean unclipped return of the last 20 episodes finished in the pools.",
)


def _pushed(sent: int, received: int, reply, seconds: float) -> None:
    PUSHPULL_BYTES.labels("sent").inc(sent)
    PUSHPULL_BYTES.labels("received").inc(received)
    PUSHPULL_SECONDS.observe(seconds)
    STALENESS.observe(reply.staleness)


def paramserver_hooks() -> Hooks:
    """What the learner counts about its calls to the shards."""
    return Hooks(failed=lambda code: PUSHPULL_FAILURES.labels(code).inc(), pushed=_pushed)
