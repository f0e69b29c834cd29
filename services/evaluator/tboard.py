"""TensorBoard event files of the evaluations, under RUN_DIR/tensorboard/eval/.

Scalars are written with tf.summary at step = the evaluated version, so they line up with
the learners' training curves. Tags: eval/score_mean, eval/score_max, eval/score_min,
eval/score_std, eval/episode_length and eval/env_frames; with --eval_both also
eval/greedy_mean or eval/sampled_mean (the other policy's mean).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from services.evaluator.stats import EvalResult

TAGS = (
    "eval/score_mean",
    "eval/score_max",
    "eval/score_min",
    "eval/score_std",
    "eval/episode_length",
    "eval/env_frames",
)


class EvalSummaries:
    def __init__(self, folder: Path):
        Path(folder).mkdir(parents=True, exist_ok=True)
        self._writer = tf.summary.create_file_writer(str(folder))

    def write(self, result: EvalResult) -> None:
        s = result.stats
        values = (s.mean, s.max, s.min, s.std, result.mean_length, float(result.env_frames))
        with self._writer.as_default(step=result.version):
            for tag, value in zip(TAGS, values, strict=True):
                tf.summary.scalar(tag, value)
            other = result.record().get("other_policy")
            if other:
                policy = "greedy" if other["greedy"] else "sampled"
                tf.summary.scalar(f"eval/{policy}_mean", other["mean"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
