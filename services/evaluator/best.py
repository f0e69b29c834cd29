"""The best parameters by evaluation score, kept apart from the shards' newest checkpoints.

After each evaluation whose mean score beats every earlier one of the run, the evaluator
writes the parameters it evaluated to RUN_DIR/checkpoints/best/ (one checkpoint file in the
shards' format: whole variables, the score in its header's `extra`). The shards never read
or prune that folder, so the best survives however long training goes on and however many
newer checkpoints replace each other. Use it with `ba3c evaluate --checkpoint
RUN_DIR/checkpoints/best` or `ba3c train --init-from RUN_DIR/checkpoints/best`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import structlog

from ba3c import checkpoint
from services.evaluator.stats import EvalResult

log = structlog.get_logger()

FOLDER = "best"


class BestKeeper:
    """Writes the parameters of an evaluation that beats the best so far (kept across
    restarts: the best score is read back from the file)."""

    def __init__(self, checkpoints_dir: Path):
        self.folder = Path(checkpoints_dir) / FOLDER
        found = checkpoint.newest(self.folder)
        self.best = float(found.extra.get("score", -math.inf)) if found else -math.inf

    def offer(self, result: EvalResult, weights: Mapping[str, np.ndarray]) -> bool:
        """Saves `weights` if `result` is the best evaluation so far; True if it did."""
        score = result.stats.mean
        if not score > self.best:
            return False
        ckpt = checkpoint.Checkpoint(
            shard=0,
            version=result.version,
            env_frames=result.env_frames,
            parameters={name: np.asarray(v, np.float32) for name, v in weights.items()},
            extra={"score": score, "episodes": len(result.episodes), "greedy": result.greedy},
        )
        # not save(keep=1): it keeps the highest version, and a shard restored from an
        # older checkpoint can make a better evaluation carry a lower one
        path = checkpoint.save(self.folder, ckpt, keep=1 << 30)
        for older in checkpoint.list_files(self.folder):
            if older != path:
                older.unlink(missing_ok=True)
        log.info("best parameters saved", score=score, previous=self.best, path=str(path))
        self.best = score
        return True
