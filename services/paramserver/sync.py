"""Sync mode's rounds: the pushes computed at one version, summed until they are applied.

A round opens with the first push computed at the shard's current version and closes
when `Leases.expected_pushes` pushes have arrived, or when `sync_timeout` seconds have
passed since it opened (then it applies what it has). The shard applies the average once,
bumps the version, and every caller that took part gets the same encoded parameters.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np


class Round:
    """Pushes at one version. Not thread-safe: the shard's lock guards it."""

    def __init__(self, version: int, timeout: float):
        self.version = version
        self.opened = time.monotonic()
        self.deadline = self.opened + timeout
        self.clients: list[str] = []
        self._sum: dict[str, np.ndarray] | None = None
        # set when the round is applied: (new version, encoded parameters, env_frames)
        self.result: tuple[int, bytes, int] | None = None

    @property
    def count(self) -> int:
        return len(self.clients)

    @property
    def done(self) -> bool:
        return self.result is not None

    def add(self, client_id: str, grads: Mapping[str, np.ndarray]) -> None:
        """Adds one push (one numpy pass per variable)."""
        if self._sum is None:
            self._sum = {name: np.array(g, dtype=np.float32) for name, g in grads.items()}
        else:
            for name, g in grads.items():
                np.add(self._sum[name], g, out=self._sum[name])
        self.clients.append(client_id)

    def average(self) -> dict[str, np.ndarray]:
        """The mean of the pushes (in place over the sum; call once)."""
        assert self._sum is not None, "a round is never applied empty"
        if self.count > 1:
            scale = np.float32(1.0 / self.count)
            for array in self._sum.values():
                array *= scale
        return self._sum
