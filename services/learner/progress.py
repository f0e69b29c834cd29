"""What the learner has seen so far: frames, agent steps, episodes and their returns, pools.

The Act streams add to it; the trainer reads it (frames to push with each update, the online
score for TensorBoard); every change also goes to the Prometheus metrics.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

from services.learner import metrics


class Progress:
    """Counters the Act streams feed and the trainer reads (thread-safe)."""

    def __init__(self, window: int = 20):
        self._lock = threading.Lock()
        self.env_frames = 0
        self.agent_steps = 0
        self.episodes = 0
        self.recent_returns: deque[float] = deque(maxlen=window)
        self.pools = 0  # distinct pools with an open stream (a double-buffered pool is one)
        self.streams = 0  # open Act streams (two for a double-buffered pool)
        self._streams_of: Counter[str] = Counter()

    def add_frames(self, frames: int, steps: int) -> None:
        with self._lock:
            self.env_frames += frames
            self.agent_steps += steps
        metrics.ENV_FRAMES.inc(frames)
        metrics.AGENT_STEPS.inc(steps)

    def add_episodes(self, returns: list[float]) -> None:
        if not returns:
            return
        with self._lock:
            self.episodes += len(returns)
            self.recent_returns.extend(returns)
            mean = float(np.mean(self.recent_returns))
        metrics.EPISODES.inc(len(returns))
        for r in returns:
            metrics.EPISODE_RETURN.observe(r)
        metrics.RETURN_MEAN.set(mean)

    def return_mean(self) -> float | None:
        with self._lock:
            return float(np.mean(self.recent_returns)) if self.recent_returns else None

    @staticmethod
    def _pool(pool_id: str) -> str:
        """The pool a stream belongs to: the halves of a double-buffered pool send
        "simulator-0/a" and "simulator-0/b"."""
        return pool_id.split("/", 1)[0]

    def pool_joined(self, pool_id: str = "") -> None:
        with self._lock:
            self._streams_of[self._pool(pool_id)] += 1
            self.streams += 1
            self.pools = len(self._streams_of)
            metrics.POOLS.set(self.pools)

    def pool_left(self, pool_id: str = "") -> None:
        with self._lock:
            name = self._pool(pool_id)
            self._streams_of[name] -= 1
            if self._streams_of[name] <= 0:
                del self._streams_of[name]
            self.streams -= 1
            self.pools = len(self._streams_of)
            metrics.POOLS.set(self.pools)
