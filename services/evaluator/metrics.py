"""The evaluator's metrics, and where an evaluation's result goes besides TensorBoard:
Prometheus, the structured log and RUN_DIR/eval.jsonl.

eval.jsonl holds one JSON object per line, one line per evaluation, written and read through
`RunDir` (`append_evaluation`, `evaluations`); the fields are those of `EvalResult.record()`
(version, env_frames, mean, max, min, std, episodes, seconds, time, and more).
"""

from __future__ import annotations

import prometheus_client as prom
import structlog

from ba3c.rundir import RunDir
from services.evaluator.stats import EvalResult

log = structlog.get_logger()

SCORE = prom.Gauge(
    "ba3c_evaluator_score", "Unclipped score of the latest evaluation, by statistic.", ["stat"]
)
EPISODE_LENGTH = prom.Gauge(
    "ba3c_evaluator_episode_length_steps", "Mean episode length of the latest evaluation."
)
VERSION = prom.Gauge("ba3c_evaluator_version", "Parameter version of the latest evaluation.")
ENV_FRAMES = prom.Gauge(
    "ba3c_evaluator_env_frames",
    "Environment frames the latest evaluated parameters were trained on.",
)
EVALUATIONS = prom.Counter("ba3c_evaluator_evaluations_total", "Evaluations completed.")
EPISODES = prom.Counter("ba3c_evaluator_episodes_total", "Evaluation episodes played.")
DURATION = prom.Histogram(
    "ba3c_evaluator_evaluation_seconds",
    "Wall time of one evaluation.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600),
)


def publish(result: EvalResult, run_dir: RunDir | None) -> None:
    """Metrics, the log line and (if given) the eval.jsonl line of one evaluation."""
    s = result.stats
    for stat in ("mean", "max", "min", "std"):
        SCORE.labels(stat).set(getattr(s, stat))
    EPISODE_LENGTH.set(result.mean_length)
    VERSION.set(result.version)
    ENV_FRAMES.set(result.env_frames)
    EVALUATIONS.inc()
    EPISODES.inc(len(result.episodes))
    DURATION.observe(result.seconds)
    record = result.record()
    if run_dir is not None:
        run_dir.append_evaluation(record)
    log.info("evaluation", **record)
