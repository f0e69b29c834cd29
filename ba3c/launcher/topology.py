"""Which processes a run needs, and the defaults that fit the machine it runs on."""

from __future__ import annotations

from dataclasses import dataclass

from ba3c.config import Config
from ba3c.machine import available_cores

# Start order; stop order is the reverse (pools first, paramservers last so that they
# write their final checkpoint after the last push).
ROLES = ("paramserver", "learner", "simulator", "evaluator")


@dataclass(frozen=True)
class ProcessSpec:
    role: str
    index: int
    max_restarts: int

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


def fit_to_machine(cfg: Config, explicitly_set: set[str], cores: int | None = None) -> Config:
    """Fills in counts the user did not choose, from the cores this machine has.

    One learner and one shard do the work of a small machine; one simulator pool (whose
    emulator threads use every core) per two cores leaves the rest to the learner's
    TensorFlow. Only --pools is chosen here; everything else keeps its configured value.
    """
    cores = cores or available_cores()
    if "pools" not in explicitly_set:
        cfg.simulator.pools = max(1, min(8, cores // 2))
    return cfg


def plan(cfg: Config, max_restarts: int = 5) -> list[ProcessSpec]:
    counts = {
        "paramserver": cfg.paramserver.ps,
        "learner": cfg.learner.learners,
        "simulator": cfg.simulator.pools,
        "evaluator": 1 if cfg.evaluator.eval_node else 0,
    }
    return [ProcessSpec(role, i, max_restarts) for role in ROLES for i in range(counts[role])]
