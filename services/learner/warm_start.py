"""Warm start (`--init-from PATH`): another run's parameters as this run's initial values.

Learner 0 loads them into its model before it initializes the shards, so they reach every
shard through the ordinary Initialize (first writer wins: a resumed run keeps its own). The
pieces are joined by their names, so the other run may have used another shard count or
fc_splits; the variables must match this run's model (same network, game and fc_neurons).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import structlog

from ba3c import checkpoint, models, sharding

log = structlog.get_logger()


class WarmStartError(ValueError):
    """--init-from names something that holds no usable parameters."""


def parameters(path: str) -> dict[str, np.ndarray]:
    """{variable: array} from the newest good checkpoint of every shard under `path`."""
    source = Path(path).expanduser()
    if not source.exists():
        raise WarmStartError(f"--init-from {source}: no such file or directory")
    try:
        pieces, version, env_frames = checkpoint.load_run_parameters(source)
        values = sharding.join_by_names(pieces)
    except ValueError as e:  # CheckpointError is a ValueError
        raise WarmStartError(f"--init-from {source}: {e}") from None
    log.info("warm start", source=str(source), version=version, env_frames=env_frames)
    return values


def load(model: models.PolicyValueModel, path: str) -> None:
    """Sets the model's values from `path`; WarmStartError if they do not fit it."""
    values = parameters(path)
    missing = sorted(set(model.variables_by_name) - set(values))
    try:
        if missing:
            raise models.ModelError(f"no values for {missing}")
        models.set_weights(model, values)
    except models.ModelError as e:
        raise WarmStartError(
            f"--init-from {path}: its parameters do not fit this run's model ({e}); "
            "use the same network, game and fc_neurons as that run"
        ) from None
