"""The run's configuration: one typed tree of dataclasses, one source of defaults.

Every service sees the same `Config`. It is built in layers, each overriding the one
before: the defaults written here -> a TOML file (normally RUN_DIR/config.toml) ->
`BA3C_<NAME>` environment variables -> command-line flags. Flag names follow the seed's
(Distributed-BA3C) where it had one, so `--lr`, `--ps`, `--use_sync` mean what they meant.

Every leaf name is unique across sections, so a knob has exactly one flag
(`--batch_size`), one environment variable (`BA3C_BATCH_SIZE`) and one TOML key
(`batch_size` under its section, e.g. `[learner]`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "BA3C_"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which and why."""


def knob(default: Any, help: str, *aliases: str, choices: Sequence[Any] | None = None) -> Any:
    """A configuration field with its help text and optional short flags (e.g. "-l")."""
    return field(
        default=default,
        metadata={"help": help, "aliases": aliases, "choices": tuple(choices or ())},
    )


@dataclass
class RunConfig:
    """What is trained, and the run's name and seed."""

    name: str = knob("ba3c", "Name of the run; the run directory is named after it.")
    env: str = knob(
        "ALE/Breakout-v5",
        "Gymnasium environment id (Atari ids such as ALE/Breakout-v5 or "
        "BreakoutNoFrameskip-v4, or any vector-observation id such as CartPole-v1).",
        "-e",
    )
    seed: int = knob(0, "Base random seed; each process derives its own from it.")
    init_from: str = knob(
        "",
        "Warm start: a new run's first learner sets the shards' initial values from another "
        "run's parameters (its run directory, checkpoints/ folder, checkpoints/best, or one "
        "file); optimizer state and version start fresh. Ignored when the shards already "
        "hold values (a resumed run).",
        "--init-from",
    )
    preset: str = knob(
        "none",
        "A named set of knob values applied over the defaults and under everything given "
        "explicitly (TOML, environment, flags). seed-best: the seed's best Breakout command, "
        "knob by knob in ba3c/presets.py; `ba3c config --preset NAME` prints the result.",
        choices=("none", "seed-best"),
    )


@dataclass
class EnvConfig:
    """How environment frames become observations (Atari preprocessing)."""

    frame_skip: int = knob(4, "Emulator frames per agent step (max-pooled over the last two).")
    noop_max: int = knob(30, "Up to this many no-op actions at the start of each episode.")
    frame_size: int = knob(84, "Observations are resized to frame_size x frame_size.")
    frame_stack: int = knob(4, "Number of consecutive frames stacked in one observation.")
    rgb: bool = knob(False, "Keep RGB frames instead of grayscale (the seed's variant).")
    episodic_life: bool = knob(
        True, "Treat the loss of a life as the end of an episode for training (Atari)."
    )
    clip_rewards: bool = knob(True, "Clip training rewards to [-1, 1]; scores stay unclipped.")
    max_episode_steps: int = knob(
        27000, "Cut an episode after this many agent steps (108k frames at frame_skip 4)."
    )
    sticky_actions: float = knob(
        -1.0,
        "Atari sticky actions: probability that the emulator repeats the previous action "
        "(-1: the env id's own, 0.25 for ALE/*-v5 ids, 0 for *NoFrameskip-v4 ids).",
    )


@dataclass
class ModelConfig:
    """The policy/value network."""

    model: str = knob(
        "auto",
        "Network: nature (Nature-DQN CNN), tensorpack (tensorpack's A3C CNN, SAME "
        "convolutions), seed (the seed's CNN: VALID 5x5 convolutions without biases), mlp "
        "(vector observations), or auto (nature for images, mlp otherwise).",
        choices=("auto", "nature", "tensorpack", "seed", "mlp"),
    )
    fc_neurons: int = knob(
        512, "Units of the CNNs' fully connected layer (the seed's --fc_neurons)."
    )
    conv_init: str = knob(
        "orthogonal",
        "Initial convolution kernels: orthogonal (ours, gain sqrt 2), normal (the seed's: "
        "truncated normal, stddev 0.03), uniform (the seed's: U(-0.05, 0.05)).",
        choices=("orthogonal", "normal", "uniform"),
    )
    fc_init: str = knob(
        "orthogonal",
        "Initial fully connected kernels: orthogonal (ours; scaled normal above 64k "
        "elements), uniform (the seed's: U(+-1.43 sqrt(3 / fan_in))), normal (the seed's: "
        "truncated normal, stddev 1 / sqrt(fan_in)).",
        choices=("orthogonal", "uniform", "normal"),
    )
    fc_splits: int = knob(
        1, "Split the fully connected layer's kernel into this many pieces across shards."
    )
    mlp_hidden: int = knob(64, "Units of each hidden layer of the mlp model.")


@dataclass
class OptimizerConfig:
    """The optimizer the parameter-server shards apply, and its learning rate."""

    optimizer: str = knob(
        "adam",
        "Optimizer applied on the parameter servers.",
        "-o",
        choices=("adam", "rmsprop", "sgd"),
    )
    lr: float = knob(0.001, "Learning rate.", "-l")
    lr_schedule: str = knob(
        "constant",
        "Learning-rate schedule over versions: constant, or linear (decays to lr_final "
        "at lr_decay_steps).",
        choices=("constant", "linear"),
    )
    lr_final: float = knob(0.0, "Learning rate reached at lr_decay_steps (linear schedule).")
    lr_decay_steps: int = knob(1_000_000, "Versions over which the linear schedule decays.")
    beta1: float = knob(0.8, "Adam beta1 (the seed's best run used 0.8).")
    beta2: float = knob(0.75, "Adam beta2 (the seed's best run used 0.75).")
    epsilon: float = knob(1e-8, "Adam / RMSProp epsilon.")
    rmsprop_decay: float = knob(0.99, "RMSProp decay of the squared-gradient average.")


@dataclass
class ParamServerConfig:
    """Parameter-server shards: how many, sync or async, leases, checkpoints."""

    ps: int = knob(1, "Number of parameter-server shards.")
    use_sync: bool = knob(
        False, "Synchronous mode: average the pushes of replicas_to_aggregate learners per step."
    )
    replicas_to_aggregate: int = knob(
        1, "Pushes averaged per version in sync mode (the seed's -g).", "-g"
    )
    sync_timeout: float = knob(
        10.0, "Sync mode: seconds to wait for missing learners before aggregating what arrived."
    )
    lease_seconds: float = knob(
        30.0, "A learner silent for this long no longer counts as live for aggregation."
    )
    max_staleness: int = knob(
        0, "Async mode: drop pushes staler than this many versions (0 = never drop)."
    )
    staleness_aware: bool = knob(
        False,
        "Async mode: divide each push's learning rate by its staleness (the versions it is "
        "behind, at least 1), as in Zhang et al. 2016, 'Staleness-aware Async-SGD'.",
    )
    save_every: int = knob(500, "Write a checkpoint every this many versions (0 = only at exit).")
    keep_checkpoints: int = knob(3, "Checkpoints kept per shard (newest first).")


@dataclass
class LearnerConfig:
    """Learners: batches, the A3C loss, batched inference, TensorFlow threads."""

    learners: int = knob(1, "Number of learner processes.")
    batch_size: int = knob(128, "Transitions per training batch.", "-b")
    t_max: int = knob(5, "Steps per environment before an n-step return is computed.")
    gamma: float = knob(0.99, "Discount factor.")
    entropy_beta: float = knob(0.01, "Weight of the entropy bonus.")
    value_loss_coef: float = knob(0.5, "Weight of the value loss.")
    grad_clip: float = knob(40.0, "Clip gradients to this global norm (0 = no clipping).")
    predict_batch_size: int = knob(
        64, "Most observations in one forward pass (the seed's PREDICT_BATCH_SIZE)."
    )
    predict_wait_ms: float = knob(
        2.0, "Longest the predictor waits to fill a batch, in milliseconds."
    )
    grad_dtype: str = knob(
        "float32", "Type of gradients on the wire.", choices=("float32", "bfloat16", "float16")
    )
    params_dtype: str = knob(
        "float32",
        "Type of the parameters the shards send back (bfloat16: half the bytes, rounded from "
        "the shards' float32 values, which every update still goes to).",
        choices=("float32", "bfloat16"),
    )
    queue_size: int = knob(
        4096, "Most transitions waiting for the trainer; a full queue slows the pools down."
    )
    threads: int = knob(
        0,
        "TensorFlow intra-op threads of the learner and evaluator (0 = the cores Slurm "
        "gives the task; outside Slurm half the cores, which the pools share).",
    )


@dataclass
class SimulatorConfig:
    """Simulator pools: how many, environments and emulator threads each."""

    pools: int = knob(1, "Number of simulator pools (processes).")
    simulator_procs: int = knob(16, "Environments stepped together by one pool.")
    sim_threads: int = knob(0, "Emulator threads per pool (0 = one per core, at most one per env).")
    double_buffer: bool = knob(
        True,
        "Atari, simulator_procs >= 2: step the pool as two halves on two Act streams, one "
        "stepping while the other waits for its actions.",
    )
    newest_frame: bool = knob(
        True,
        "Atari: send only the newest frame of each observation; the learner stacks "
        "frame_stack of them (PoolSpec.frame_stack; needs a learner of contract version 2).",
    )


@dataclass
class EvaluatorConfig:
    """The evaluator: when and how it evaluates, and what it records."""

    eval_node: bool = knob(True, "Run the evaluator (the seed's --eval_node).")
    record_node: bool = knob(False, "Record a video of each evaluation (the seed's --record_node).")
    eval_every: float = knob(60.0, "Seconds between evaluations.")
    eval_every_versions: int = knob(
        0, "Also evaluate as soon as the version advanced this much (0 = by time only)."
    )
    eval_episodes: int = knob(5, "Episodes per evaluation.")
    eval_greedy: bool = knob(False, "Evaluate the greedy policy instead of sampling actions.")
    eval_both: bool = knob(
        False,
        "Each evaluation also plays eval_episodes with the other policy (greedy when "
        "eval_greedy is off, sampled when it is on), on the same episode seeds; eval.jsonl "
        "(other_policy), TensorBoard, the log and the live view report both. Doubles the "
        "evaluation's time.",
    )
    eval_max_steps: int = knob(27000, "Cut an evaluation episode after this many agent steps.")
    keep_videos: int = knob(5, "Newest videos kept (the best one is always kept as well).")
    eval_stop_grace: float = knob(
        15.0,
        "Seconds an evaluation in progress may go on after a stop request; then it is "
        "abandoned unreported (keep it below hetjob.sh's BA3C_STOP_GRACE).",
    )


@dataclass
class NetConfig:
    """Networking: bind address, message size, deadlines, metrics, TLS."""

    host: str = knob(
        "",
        "Address servers bind to, and advertise unless advertise_host or net_interface says "
        "otherwise (empty: the node's hostname under Slurm, else 127.0.0.1).",
    )
    advertise_host: str = knob(
        "",
        "Name or address written to RUN_DIR/addresses/ for others to dial (empty: what is "
        "bound; never 0.0.0.0, a wildcard bind advertises the hostname).",
    )
    net_interface: str = knob(
        "",
        "Network interface (e.g. ib0, eth0) whose IPv4 address each node binds and "
        "advertises, unless host/advertise_host are set.",
    )
    max_message_mb: int = knob(256, "Largest gRPC message, in MiB.")
    rpc_timeout: float = knob(60.0, "Deadline of one PushPull/Pull call, in seconds.")
    metrics: bool = knob(True, "Serve Prometheus metrics over HTTP.")
    tls: bool = knob(
        False, "Encrypt gRPC with TLS: a per-run CA in RUN_DIR/tls/, one certificate per server."
    )


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    paramserver: ParamServerConfig = field(default_factory=ParamServerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    net: NetConfig = field(default_factory=NetConfig)

    def validate(self) -> Config:
        """Checks values that no type can express; raises ConfigError naming the knob."""
        positive = {
            "ps": self.paramserver.ps,
            "learners": self.learner.learners,
            "pools": self.simulator.pools,
            "simulator_procs": self.simulator.simulator_procs,
            "batch_size": self.learner.batch_size,
            "t_max": self.learner.t_max,
            "replicas_to_aggregate": self.paramserver.replicas_to_aggregate,
            "fc_splits": self.model.fc_splits,
            "frame_skip": self.env.frame_skip,
            "frame_stack": self.env.frame_stack,
            "eval_episodes": self.evaluator.eval_episodes,
            "eval_max_steps": self.evaluator.eval_max_steps,
            "predict_batch_size": self.learner.predict_batch_size,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name} must be at least 1, got {value}")
        if not 0 < self.learner.gamma <= 1:
            raise ConfigError(f"--gamma must be in (0, 1], got {self.learner.gamma}")
        if not (self.optim.lr > 0 and math.isfinite(self.optim.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.optim.lr}")
        if self.paramserver.sync_timeout <= 0:
            raise ConfigError(
                f"--sync_timeout must be positive, got {self.paramserver.sync_timeout}"
            )
        if not self.evaluator.eval_stop_grace >= 0:
            raise ConfigError(
                f"--eval_stop_grace must be >= 0, got {self.evaluator.eval_stop_grace}"
            )
        for name, value in (("beta1", self.optim.beta1), ("beta2", self.optim.beta2)):
            if not 0 <= value < 1:
                raise ConfigError(f"--{name} must be in [0, 1), got {value}")
        return self


# ---------------------------------------------------------------------------------------
# Walking the tree


@dataclass(frozen=True)
class Knob:
    """One leaf of the tree: where it lives, its type, default and help."""

    section: str
    name: str
    type: type
    default: Any
    help: str
    aliases: tuple[str, ...]
    choices: tuple[Any, ...]

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name


def knobs() -> Iterator[Knob]:
    """Every leaf of Config, in declaration order."""
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        leaf_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield Knob(
                section=section.name,
                name=f.name,
                type=leaf_hints[f.name],
                default=f.default,
                help=f.metadata["help"],
                aliases=tuple(f.metadata["aliases"]),
                choices=tuple(f.metadata["choices"]),
            )


def _check_unique_names() -> None:
    seen: dict[str, str] = {}
    for k in knobs():
        if k.name in seen:
            raise AssertionError(f"knob {k.name} is in both [{seen[k.name]}] and [{k.section}]")
        seen[k.name] = k.section


_check_unique_names()


def parse_value(k: Knob, raw: Any, source: str) -> Any:
    """Turns a raw value (string from env/flags, or TOML value) into the knob's type."""
    try:
        if k.type is bool:
            if isinstance(raw, bool):
                value = raw
            elif str(raw).strip().lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).strip().lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError(raw)
        elif k.type is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            value = int(raw)
        elif k.type is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = float(raw)
        else:
            if not isinstance(raw, str):
                raise ValueError(raw)
            value = raw
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {k.name} expects {k.type.__name__}, got {raw!r}") from None
    if k.choices and value not in k.choices:
        raise ConfigError(
            f"{source}: {k.name} must be one of {', '.join(map(str, k.choices))}, got {value!r}"
        )
    return value


def _set(cfg: Config, k: Knob, value: Any) -> None:
    setattr(getattr(cfg, k.section), k.name, value)


def get(cfg: Config, name: str) -> Any:
    """The value of the knob called `name`, wherever it lives."""
    for k in knobs():
        if k.name == name:
            return getattr(getattr(cfg, k.section), name)
    raise KeyError(name)


# ---------------------------------------------------------------------------------------
# The layers


def apply_mapping(cfg: Config, data: Mapping[str, Any], source: str) -> None:
    """Applies a TOML-shaped mapping ({section: {name: value}}); unknown keys are errors."""
    by_section: dict[str, dict[str, Knob]] = {}
    for k in knobs():
        by_section.setdefault(k.section, {})[k.name] = k
    for section, values in data.items():
        if section not in by_section:
            raise ConfigError(
                f"{source}: unknown section [{section}] (known: {', '.join(by_section)})"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for name, raw in values.items():
            if name not in by_section[section]:
                raise ConfigError(f"{source}: unknown key {name!r} in [{section}]")
            k = by_section[section][name]
            _set(cfg, k, parse_value(k, raw, source))


def apply_toml(cfg: Config, path: Path) -> None:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    apply_mapping(cfg, data, str(path))


def apply_environ(cfg: Config, environ: Mapping[str, str]) -> None:
    for k in knobs():
        if k.env_var in environ:
            _set(cfg, k, parse_value(k, environ[k.env_var], f"environment {k.env_var}"))


def _description(section: type) -> str | None:
    """The first line of a section's own docstring (not the signature dataclass makes up)."""
    doc = section.__doc__ or ""
    return None if doc.startswith(section.__name__ + "(") else doc.split("\n")[0] or None


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per knob. Flags default to None so that unset flags override nothing."""
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        group = parser.add_argument_group(
            f"{section.name} options", _description(hints[section.name])
        )
        for k in (k for k in knobs() if k.section == section.name):
            default = k.default
            help_text = f"{k.help} Default: {default}. Env: {k.env_var}."
            if k.choices:
                help_text += f" One of: {', '.join(map(str, k.choices))}."
            if k.type is bool:
                group.add_argument(
                    *k.aliases,
                    k.flag,
                    dest=k.name,
                    default=None,
                    action=argparse.BooleanOptionalAction,
                    help=help_text,
                )
            else:
                group.add_argument(
                    *k.aliases,
                    k.flag,
                    dest=k.name,
                    default=None,
                    metavar=k.type.__name__.upper(),
                    help=help_text,
                )


def apply_flags(cfg: Config, args: argparse.Namespace) -> None:
    for k in knobs():
        raw = getattr(args, k.name, None)
        if raw is not None:
            _set(cfg, k, parse_value(k, raw, f"flag {k.flag}"))


def load(
    toml_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    args: argparse.Namespace | None = None,
) -> Config:
    """Builds the configuration: defaults -> preset -> TOML -> environment -> flags, then
    validates. The preset is the one the highest of the other layers names."""
    environ = os.environ if environ is None else environ

    def layered(cfg: Config) -> Config:
        if toml_path is not None:
            apply_toml(cfg, toml_path)
        apply_environ(cfg, environ)
        if args is not None:
            apply_flags(cfg, args)
        return cfg

    cfg = layered(Config())
    if cfg.run.preset != "none":
        from ba3c import presets  # here: presets imports this module

        base = Config()
        apply_mapping(base, presets.mapping(cfg.run.preset), f"preset {cfg.run.preset}")
        cfg = layered(base)
    return cfg.validate()


# ---------------------------------------------------------------------------------------
# Writing it back


def to_mapping(cfg: Config) -> dict[str, dict[str, Any]]:
    return {s: dict(vars(getattr(cfg, s))) for s in (f.name for f in dataclasses.fields(Config))}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(cfg: Config) -> str:
    """The configuration as TOML, with each knob's help as a comment."""
    helps = {k.name: k.help for k in knobs()}
    lines = ["# ba3c run configuration (resolved). Every knob is documented by `ba3c --help`."]
    for section, values in to_mapping(cfg).items():
        lines.append(f"\n[{section}]")
        for name, value in values.items():
            lines.append(f"# {helps[name]}")
            lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
