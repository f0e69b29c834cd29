"""What one evaluation found: the scores of its episodes and their summary statistics.

`EvalResult` is the record every output of the evaluator is made from: the eval.jsonl
line, the TensorBoard scalars, the Prometheus gauges and the log line. Scores are the
unclipped game scores, summed over a whole game (all lives).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Episode:
    """One played episode: its unclipped score, its length in agent steps, and whether it
    ended by itself (game over) rather than being cut at the step cap."""

    score: float
    length: int
    finished: bool = True


@dataclass(frozen=True)
class ScoreStats:
    mean: float
    max: float
    min: float
    std: float  # population standard deviation (0 for one episode)

    @classmethod
    def of(cls, scores: Sequence[float]) -> ScoreStats:
        if not scores:
            raise ValueError("no scores: an evaluation plays at least one episode")
        n = len(scores)
        mean = math.fsum(scores) / n
        variance = math.fsum((s - mean) ** 2 for s in scores) / n
        return cls(mean=mean, max=max(scores), min=min(scores), std=math.sqrt(variance))


@dataclass(frozen=True)
class EvalResult:
    """An evaluation of the parameters at `version` (trained on `env_frames` frames)."""

    version: int
    env_frames: int
    episodes: tuple[Episode, ...]
    seconds: float
    greedy: bool
    versions: tuple[int, ...] = ()  # every shard's version, in shard order
    video: str | None = None  # file name of the recording under RUN_DIR/videos/
    other: tuple[Episode, ...] = ()  # --eval_both: the same seeds with the other policy
    time: float = field(default_factory=time.time)  # when it finished, Unix seconds

    @property
    def stats(self) -> ScoreStats:
        return ScoreStats.of([e.score for e in self.episodes])

    @property
    def mean_length(self) -> float:
        return math.fsum(e.length for e in self.episodes) / len(self.episodes)

    def record(self) -> dict:
        """The eval.jsonl line (and the fields of the log line)."""
        s = self.stats
        return {
            "version": self.version,
            "env_frames": self.env_frames,
            "mean": s.mean,
            "max": s.max,
            "min": s.min,
            "std": s.std,
            "episodes": len(self.episodes),
            "seconds": round(self.seconds, 3),
            "time": round(self.time, 3),
            "scores": [e.score for e in self.episodes],
            "lengths": [e.length for e in self.episodes],
            "cut": sum(not e.finished for e in self.episodes),
            "mean_length": self.mean_length,
            "greedy": self.greedy,
            "versions": list(self.versions),
            "video": self.video,
            **self._other_record(),
        }

    def _other_record(self) -> dict:
        """--eval_both: the other policy's statistics (its "greedy" flag says which)."""
        if not self.other:
            return {}
        s = ScoreStats.of([e.score for e in self.other])
        return {
            "other_policy": {
                "greedy": not self.greedy,
                "mean": s.mean,
                "max": s.max,
                "min": s.min,
                "std": s.std,
                "scores": [e.score for e in self.other],
            }
        }
