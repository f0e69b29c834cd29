"""Named sets of knob values (`--preset NAME`), applied over the defaults and under every
value given explicitly (TOML, environment, flags): `--preset seed-best --lr 3e-4` is the
seed's configuration with another learning rate.

`seed-best` is the command the seed (Distributed-BA3C) README gives for its best Breakout
results:

    python run_job.py -n 71 -g 60 -c 12 -o adam --use_sync -l 0.001 -b 32 --fc_neurons 128
        --simulator_procs 10 --ps 4 --fc_init uniform --conv_init normal --fc_splits 4
        --epsilon 1e-8 --beta1 0.8 --beta2 0.75 -e Breakout-v0 --eval_node --record_node
        --save_every 1000

Each setting below says where it comes from. What the preset leaves alone stays ba3c's:
the game (`-e`; the seed's Breakout-v0 is gym's, use ALE/Breakout-v5 or
BreakoutNoFrameskip-v4), the number of learners and `replicas_to_aggregate` (the seed's
`-n`/`-g` size a 64-worker cluster; under Slurm the job sets them from its task counts),
gradient clipping (the seed clipped each tensor's average norm to 0.1, ba3c clips the global
norm, `--grad_clip`), t_max 5, gamma 0.99 and entropy_beta 0.01 (the same as the seed's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    section: str
    name: str
    value: Any
    origin: str  # where the value comes from, for `ba3c presets` and the docs


SEED_BEST = (
    Setting("model", "model", "seed", "seed: its CNN, VALID 5x5 convolutions, no conv biases"),
    Setting("model", "fc_neurons", 128, "seed: --fc_neurons 128"),
    Setting("model", "fc_splits", 4, "seed: --fc_splits 4"),
    Setting("model", "fc_init", "uniform", "seed: --fc_init uniform"),
    Setting("model", "conv_init", "normal", "seed: --conv_init normal"),
    Setting("optim", "optimizer", "adam", "seed: -o adam"),
    Setting("optim", "lr", 0.001, "seed: -l 0.001"),
    Setting("optim", "beta1", 0.8, "seed: --beta1 0.8"),
    Setting("optim", "beta2", 0.75, "seed: --beta2 0.75"),
    Setting("optim", "epsilon", 1e-8, "seed: --epsilon 1e-8"),
    Setting("paramserver", "ps", 4, "seed: --ps 4"),
    Setting("paramserver", "use_sync", True, "seed: --use_sync"),
    Setting("paramserver", "save_every", 1000, "seed: --save_every 1000"),
    Setting("learner", "batch_size", 32, "seed: -b 32 (per learner)"),
    Setting("simulator", "simulator_procs", 10, "seed: --simulator_procs 10"),
    Setting("evaluator", "eval_node", True, "seed: --eval_node"),
    Setting("evaluator", "record_node", True, "seed: --record_node"),
)

PRESETS: dict[str, tuple[Setting, ...]] = {"seed-best": SEED_BEST}


def mapping(name: str) -> dict[str, dict[str, Any]]:
    """The preset as a TOML-shaped mapping ({section: {knob: value}})."""
    try:
        settings = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
    out: dict[str, dict[str, Any]] = {}
    for s in settings:
        out.setdefault(s.section, {})[s.name] = s.value
    return out


def describe(name: str) -> str:
    """One line per setting: `--knob value   origin`."""
    return "\n".join(f"--{s.name} {s.value!s:<10} {s.origin}" for s in PRESETS[name])
