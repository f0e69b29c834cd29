"""ba3c's paramserver with Adam's bias correction left out: the conformance kit must fail it.

Run as `python -m tests.servers.broken_paramserver --run-dir D [paramserver flags]`. Every
update runs as if the shard had taken a million steps, so Adam uses its raw moments
(1 - beta^t = 1) instead of the bias-corrected ones; everything else is ba3c's own shard.
"""

from __future__ import annotations

import sys

from services.paramserver import main, optimizers

_apply = optimizers.Optimizer.apply


def apply_without_bias_correction(self, params, grads, lr, *args, **kwargs):
    step = self.step
    self.step = 1_000_000  # beta^t underflows to 0: no bias correction
    try:
        _apply(self, params, grads, lr, *args, **kwargs)
    finally:
        self.step = step + 1


if __name__ == "__main__":
    optimizers.Optimizer.apply = apply_without_bias_correction
    sys.exit(main.main(sys.argv[1:]))
