"""What the learner has seen so far: frames, agent steps, episodes and their returns, pools.

The Act streams add to it; the trainer reads it (frames to push with each update, the online
score for TensorBoard); every change also goes to the Prometheus metrics.
"""

from __future__ import annotations

import threading
from collections import deque

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
        self.pools = 0

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

    def pool_joined(self) -> None:
        with self._lock:
            self.pools += 1
        metrics.POOLS.inc()

    def pool_left(self) -> None:
        with self._lock:
            self.pools -= 1
        metrics.POOLS.dec()
