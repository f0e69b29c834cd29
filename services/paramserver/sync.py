"""Sync mode's rounds: the pushes computed at one version, summed until they are applied.

A round opens with the first push computed at the shard's current version and closes
when `Leases.expected_pushes` pushes have arrived, or when `sync_timeout` seconds have
passed since it opened (then it applies what it has). The pushes are summed in place into
float32 buffers the shard owns (one compiled pass per variable, bfloat16 read as it
arrived); the shard applies the mean once (the optimizer's pass scales the sum by 1/N),
bumps the version, and every caller that took part gets the same encoded parameters.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from services.paramserver import kernels


class Round:
    """Pushes at one version. Not thread-safe: the shard's lock guards it."""

    def __init__(self, version: int, timeout: float, sums: Mapping[str, np.ndarray]):
        """`sums`: float32 buffers shaped like the variables, overwritten by the first push."""
        self.version = version
        self.opened = time.monotonic()
        self.deadline = self.opened + timeout
        self.clients: list[str] = []
        self._sum = sums
        # set when the round is applied: (new version, encoded parameters, env_frames)
        self.result: tuple[int, bytes, int] | None = None

    @property
    def count(self) -> int:
        return len(self.clients)

    @property
    def done(self) -> bool:
        return self.result is not None

    def add(self, client_id: str, grads: Mapping[str, np.ndarray]) -> None:
        """Adds one push (one compiled pass per variable)."""
        first = not self.clients
        for name, g in grads.items():
            kernels.accumulate(self._sum[name].reshape(-1), kernels.as_kernel_input(g), first)
        self.clients.append(client_id)

    def average(self) -> tuple[Mapping[str, np.ndarray], float]:
        """(sum, scale): the mean of the pushes is sum * scale (the optimizer applies it)."""
        assert self.clients, "a round is never applied empty"
        return self._sum, (1.0 / self.count if self.count > 1 else 1.0)
