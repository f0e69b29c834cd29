"""The optimizer maths of docs/contracts.md, written out in float64 numpy, independent of
any server: the kit pushes known gradients and compares the parameters it gets back with
these."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ba3c.config import OptimizerConfig


def learning_rate(optim: OptimizerConfig, version: int) -> float:
    """lr at shard version `version` (the version before the update)."""
    if optim.lr_schedule == "linear":
        frac = min(max(version, 0), optim.lr_decay_steps) / max(1, optim.lr_decay_steps)
        return optim.lr + (optim.lr_final - optim.lr) * frac
    return optim.lr


class Reference:
    """Parameters and optimizer state of one shard, updated as the contract says."""

    def __init__(self, optim: OptimizerConfig, params: Mapping[str, np.ndarray]):
        self.optim = optim
        self.params = {n: np.asarray(a, np.float64).copy() for n, a in params.items()}
        self.m = {n: np.zeros_like(a) for n, a in self.params.items()}
        self.v = {n: np.zeros_like(a) for n, a in self.params.items()}
        self.steps = 0  # updates applied since Initialize: Adam's t is steps + 1

    def apply(self, grads: Mapping[str, np.ndarray], version: int) -> None:
        """One update with `grads` (already averaged in sync mode) at shard `version`."""
        o = self.optim
        lr = learning_rate(o, version)
        t = self.steps + 1
        for name, p in self.params.items():
            g = np.asarray(grads[name], np.float64)
            if o.optimizer == "adam":
                self.m[name] = o.beta1 * self.m[name] + (1 - o.beta1) * g
                self.v[name] = o.beta2 * self.v[name] + (1 - o.beta2) * g * g
                alpha = lr * np.sqrt(1 - o.beta2**t) / (1 - o.beta1**t)
                p -= alpha * self.m[name] / (np.sqrt(self.v[name]) + o.epsilon)
            elif o.optimizer == "rmsprop":
                self.v[name] = o.rmsprop_decay * self.v[name] + (1 - o.rmsprop_decay) * g * g
                p -= lr * g / np.sqrt(self.v[name] + o.epsilon)
            elif o.optimizer == "sgd":
                p -= lr * g
            else:
                raise ValueError(f"unknown optimizer {o.optimizer!r}")
        self.steps += 1


def max_error(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """Largest |got - want| over all variables, and the variable it is in."""
    worst, where = 0.0, ""
    for name, w in want.items():
        err = float(np.max(np.abs(np.asarray(got[name], np.float64) - w), initial=0.0))
        if err > worst:
            worst, where = err, name
    return worst, where
