"""The policy/value networks shared by the learner and the evaluator (TensorFlow 2).

Three networks, picked by the `model` knob:

    nature      Nature-DQN CNN: conv 32@8x8/4, 64@4x4/2, 64@3x3/1, fc `fc_neurons` (512)
    tensorpack  tensorpack's A3C CNN: conv 32@5x5, pool, 32@5x5, pool, 64@4x4, pool,
                64@3x3 (SAME), fc `fc_neurons` (images; about 10x slower than nature)
    seed        the seed's CNN (Distributed-BA3C): conv 32@5x5, pool, 32@5x5, pool, 64@5x5,
                pool, 64@3x3, all VALID and without biases, fc `fc_neurons` (images)
    mlp         two tanh layers of `mlp_hidden` units (vector observations)
    auto        nature for image observations (rank 3), mlp otherwise

Each ends in two heads: policy logits [B, A] and a value [B]. Images arrive as uint8
[B, H, W, C] and are scaled by 1/255 inside the model; vectors arrive as float32 [B, D].

Initial kernels follow `conv_init` / `fc_init`: orthogonal (ours), or the seed's normal and
uniform initializers (see `_seed_kernel`). The heads keep ours in every case.

Variables are plain `tf.Variable`s with stable names ("conv1/kernel", "fc/kernel",
"policy/bias", ...) in a fixed order, whatever else the process has built, so that
`assignment()` gives every learner and the evaluator the same shard layout. Initial
values come from numpy seeded by cfg.run.seed: the same seed gives the same network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

# GPU memory grows as needed instead of TensorFlow taking all of it at start, so that two
# learners (or a learner and the evaluator) can share one GPU. Read when TF first sees the
# GPU; a value set by the user wins.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

import tensorflow as tf  # noqa: E402 - after the setting above

from ba3c.config import Config
from ba3c.machine import available_cores
from ba3c.sharding import Assignment

FC_KERNEL = "fc/kernel"


class ModelError(ValueError):
    """A model that cannot be built for these observations, or values that do not fit it."""


# ---------------------------------------------------------------------------------------
# Layers as (name, kind, settings); the forward pass walks this list.


def _nature_layers(cfg: Config) -> list[tuple[str, str, dict]]:
    return [
        ("conv1", "conv", dict(filters=32, size=8, stride=4, padding="VALID")),
        ("conv2", "conv", dict(filters=64, size=4, stride=2, padding="VALID")),
        ("conv3", "conv", dict(filters=64, size=3, stride=1, padding="VALID")),
        ("fc", "dense", dict(units=cfg.model.fc_neurons, activation="relu")),
    ]


def _seed_layers(cfg: Config) -> list[tuple[str, str, dict]]:
    conv = dict(stride=1, padding="VALID", bias=False)
    return [
        ("conv0", "conv", dict(filters=32, size=5, **conv)),
        ("pool0", "pool", {}),
        ("conv1", "conv", dict(filters=32, size=5, **conv)),
        ("pool1", "pool", {}),
        ("conv2", "conv", dict(filters=64, size=5, **conv)),
        ("pool2", "pool", {}),
        ("conv3", "conv", dict(filters=64, size=3, **conv)),
        ("fc", "dense", dict(units=cfg.model.fc_neurons, activation="relu")),
    ]


def _tensorpack_layers(cfg: Config) -> list[tuple[str, str, dict]]:
    return [
        ("conv0", "conv", dict(filters=32, size=5, stride=1, padding="SAME")),
        ("pool0", "pool", {}),
        ("conv1", "conv", dict(filters=32, size=5, stride=1, padding="SAME")),
        ("pool1", "pool", {}),
        ("conv2", "conv", dict(filters=64, size=4, stride=1, padding="SAME")),
        ("pool2", "pool", {}),
        ("conv3", "conv", dict(filters=64, size=3, stride=1, padding="SAME")),
        ("fc", "dense", dict(units=cfg.model.fc_neurons, activation="relu")),
    ]


def _mlp_layers(cfg: Config) -> list[tuple[str, str, dict]]:
    return [
        ("hidden1", "dense", dict(units=cfg.model.mlp_hidden, activation="tanh")),
        ("hidden2", "dense", dict(units=cfg.model.mlp_hidden, activation="tanh")),
    ]


_ARCHITECTURES = {
    "nature": _nature_layers,
    "tensorpack": _tensorpack_layers,
    "seed": _seed_layers,
    "mlp": _mlp_layers,
}


def resolve_kind(cfg: Config, observation_shape: tuple[int, ...]) -> str:
    """The network the `model` knob picks for these observations."""
    kind = cfg.model.model
    if kind == "auto":
        kind = "nature" if len(observation_shape) == 3 else "mlp"
    image = kind in ("nature", "tensorpack", "seed")
    if image and len(observation_shape) != 3:
        raise ModelError(
            f"model {kind} needs image observations [H, W, C], got shape {list(observation_shape)}"
        )
    if not image and len(observation_shape) != 1:
        raise ModelError(
            f"model {kind} needs vector observations [D], got shape {list(observation_shape)}"
        )
    return kind


ORTHOGONAL_MAX = 1 << 16  # larger kernels get scaled-normal values: QR would take seconds


def _initial_kernel(rng: np.random.Generator, shape: tuple[int, ...], gain: float) -> np.ndarray:
    """Orthogonal initial values (as in most A3C/PPO code) for kernels up to
    ORTHOGONAL_MAX elements; larger ones (the CNNs' fc layer) get normal values with the
    same scale per unit, gain / sqrt(fan_in), which costs no QR decomposition."""
    rows = int(np.prod(shape[:-1]))
    cols = shape[-1]
    if rows * cols > ORTHOGONAL_MAX:
        values = rng.standard_normal((rows, cols), dtype=np.float32) * (gain / np.sqrt(rows))
        return values.reshape(shape).astype(np.float32)
    a = rng.standard_normal((max(rows, cols), min(rows, cols)), dtype=np.float32)
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q[:rows, :cols]).reshape(shape).astype(np.float32)


def _seed_kernel(
    rng: np.random.Generator, shape: tuple[int, ...], init: str, dense: bool
) -> np.ndarray:
    """The seed's initializers (its tensorpack fork's Conv2D and FullyConnected):
    conv normal = truncated normal, stddev 0.03; conv uniform = U(-0.05, 0.05);
    fc uniform = TF1's uniform_unit_scaling(factor 1.43) = U(+-1.43 sqrt(3 / fan_in));
    fc normal = truncated normal, stddev 1 / sqrt(fan_in)."""
    fan_in = int(np.prod(shape[:-1]))
    if init == "uniform":
        limit = 1.43 * np.sqrt(3.0 / fan_in) if dense else 0.05
        return rng.uniform(-limit, limit, size=shape).astype(np.float32)
    stddev = 1.0 / np.sqrt(fan_in) if dense else 0.03
    values = rng.standard_normal(shape, dtype=np.float32)
    while np.any(outside := np.abs(values) > 2.0):  # truncated at 2 stddev, as TF's
        values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
    return values * np.float32(stddev)


class PolicyValueModel(tf.Module):
    """observations -> (policy logits [B, A], value [B]); see the module docstring.

    `forward` is a tf.function with a fixed input signature (any batch size), so it is
    traced once. `variables_by_name` keeps the stable names in their fixed order.
    """

    def __init__(
        self,
        kind: str,
        layers: list[tuple[str, str, dict]],
        observation_shape: tuple[int, ...],
        observation_dtype: tf.DType,
        num_actions: int,
        seed: int,
        conv_init: str = "orthogonal",
        fc_init: str = "orthogonal",
    ):
        super().__init__(name=None)
        self.conv_init = conv_init
        self.fc_init = fc_init
        self.kind = kind
        self.layers = layers
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.observation_dtype = observation_dtype
        self.num_actions = int(num_actions)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xBA3C]))
        self.variables_by_name: dict[str, tf.Variable] = {}
        features = self._build(rng)
        self._add("policy/kernel", _initial_kernel(rng, (features, self.num_actions), 0.01))
        self._add("policy/bias", np.zeros(self.num_actions, np.float32))
        self._add("value/kernel", _initial_kernel(rng, (features, 1), 1.0))
        self._add("value/bias", np.zeros(1, np.float32))
        self.input_signature = tf.TensorSpec(
            (None, *self.observation_shape), observation_dtype, name="observations"
        )
        self.forward = tf.function(self._forward, input_signature=[self.input_signature])
        self._traced = None  # forward's concrete function, traced on the first predict

    def _add(self, name: str, value: np.ndarray) -> None:
        safe = name.replace("/", "_")
        self.variables_by_name[name] = tf.Variable(value, name=safe, trainable=True)

    def _build(self, rng: np.random.Generator) -> int:
        """Creates the body's variables; returns the size of the features it outputs."""
        shape = self.observation_shape
        for name, kind, s in self.layers:
            if kind == "conv":
                h, w, c = shape
                k = (s["size"], s["size"], c, s["filters"])
                self._add(f"{name}/kernel", self._kernel(rng, k, np.sqrt(2), dense=False))
                if s.get("bias", True):
                    self._add(f"{name}/bias", np.zeros(s["filters"], np.float32))
                if s["padding"] == "SAME":
                    h, w = -(-h // s["stride"]), -(-w // s["stride"])
                else:
                    h = (h - s["size"]) // s["stride"] + 1
                    w = (w - s["size"]) // s["stride"] + 1
                shape = (h, w, s["filters"])
            elif kind == "pool":
                shape = (shape[0] // 2, shape[1] // 2, shape[2])
            else:
                units_in = int(np.prod(shape))
                gain = np.sqrt(2) if s["activation"] == "relu" else 1.0
                kernel = self._kernel(rng, (units_in, s["units"]), gain, dense=True)
                self._add(f"{name}/kernel", kernel)
                self._add(f"{name}/bias", np.zeros(s["units"], np.float32))
                shape = (s["units"],)
        return int(np.prod(shape))

    def _kernel(
        self, rng: np.random.Generator, shape: tuple[int, ...], gain: float, dense: bool
    ) -> np.ndarray:
        init = self.fc_init if dense else self.conv_init
        if init == "orthogonal":
            return _initial_kernel(rng, shape, gain)
        return _seed_kernel(rng, shape, init, dense)

    def _forward(self, observations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        v = self.variables_by_name
        x = tf.cast(observations, tf.float32)
        if observations.dtype == tf.uint8:
            x = x * (1.0 / 255.0)
        for name, kind, s in self.layers:
            if kind == "conv":
                x = tf.nn.conv2d(x, v[f"{name}/kernel"], s["stride"], s["padding"])
                if s.get("bias", True):
                    x = tf.nn.bias_add(x, v[f"{name}/bias"])
                x = tf.nn.relu(x)
            elif kind == "pool":
                x = tf.nn.max_pool2d(x, 2, 2, "VALID")
            else:
                if len(x.shape) > 2:
                    x = tf.reshape(x, (-1, int(np.prod(x.shape[1:]))))
                x = tf.matmul(x, v[f"{name}/kernel"]) + v[f"{name}/bias"]
                x = tf.nn.relu(x) if s["activation"] == "relu" else tf.tanh(x)
        logits = tf.matmul(x, v["policy/kernel"]) + v["policy/bias"]
        value = tf.squeeze(tf.matmul(x, v["value/kernel"]) + v["value/bias"], axis=1)
        return logits, value

    def __call__(self, observations) -> tuple[tf.Tensor, tf.Tensor]:
        return self.forward(tf.convert_to_tensor(observations, self.observation_dtype))

    def predict(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits [B, A], value [B]) as numpy: the acting and evaluating forward pass.

        Calls forward's traced concrete function directly, which skips tf.function's
        per-call argument matching (a batch-8 call in 0.79x the time, measured 2026-12-02).
        """
        if self._traced is None:
            self._traced = self.forward.get_concrete_function()
        logits, values = self._traced(tf.convert_to_tensor(observations, self.observation_dtype))
        return logits.numpy(), values.numpy()

    @property
    def ordered_variables(self) -> list[tf.Variable]:
        return list(self.variables_by_name.values())


# ---------------------------------------------------------------------------------------
# The interface the learner and the evaluator use


def build_model(
    cfg: Config,
    observation_shape: tuple[int, ...],
    num_actions: int,
    observation_dtype: str | np.dtype | None = None,
) -> PolicyValueModel:
    """The network `cfg.model.model` picks, with initial values from cfg.run.seed.

    `observation_dtype` defaults to uint8 for images and float32 for vectors.
    """
    observation_shape = tuple(int(d) for d in observation_shape)
    if num_actions < 1:
        raise ModelError(f"num_actions must be at least 1, got {num_actions}")
    kind = resolve_kind(cfg, observation_shape)
    if observation_dtype is None:
        observation_dtype = "uint8" if len(observation_shape) == 3 else "float32"
    dtype = tf.as_dtype(np.dtype(observation_dtype))
    return PolicyValueModel(
        kind,
        _ARCHITECTURES[kind](cfg),
        observation_shape,
        dtype,
        num_actions,
        cfg.run.seed,
        conv_init=cfg.model.conv_init,
        fc_init=cfg.model.fc_init,
    )


def variable_names_and_shapes(model: PolicyValueModel) -> list[tuple[str, tuple[int, ...]]]:
    """[(stable name, shape)] in the model's fixed order."""
    return [
        (name, tuple(int(d) for d in var.shape)) for name, var in model.variables_by_name.items()
    ]


def assignment(cfg: Config, model: PolicyValueModel) -> Assignment:
    """The shard layout every learner and the evaluator share (fc kernel split fc_splits ways)."""
    splits = {}
    if FC_KERNEL in model.variables_by_name and cfg.model.fc_splits > 1:
        splits[FC_KERNEL] = cfg.model.fc_splits
    return Assignment(variable_names_and_shapes(model), cfg.paramserver.ps, splits)


def get_weights(model: PolicyValueModel) -> dict[str, np.ndarray]:
    """{stable name: float32 array} (copies)."""
    return {name: var.numpy() for name, var in model.variables_by_name.items()}


def set_weights(model: PolicyValueModel, values: Mapping[str, np.ndarray]) -> None:
    """Loads values by name. Checks all names and shapes first, so a bad map changes nothing."""
    unknown = sorted(set(values) - set(model.variables_by_name))
    if unknown:
        raise ModelError(f"unknown variables {unknown}")
    for name, value in values.items():
        expected = tuple(model.variables_by_name[name].shape)
        if tuple(np.shape(value)) != expected:
            raise ModelError(
                f"variable {name!r}: shape {list(np.shape(value))}, model has {list(expected)}"
            )
    for name, value in values.items():
        model.variables_by_name[name].assign(np.asarray(value, dtype=np.float32))


def sample_actions(
    logits: np.ndarray, greedy: bool, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Actions from logits [B, A]: argmax if greedy, else sampled from softmax(logits)."""
    logits = np.asarray(logits, dtype=np.float64)
    if greedy:
        return np.argmax(logits, axis=1).astype(np.int32)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    # Gumbel-max: argmax(logits + Gumbel noise) is a sample of softmax(logits).
    gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, size=logits.shape)))
    return np.argmax(logits + gumbel, axis=1).astype(np.int32)


def act(
    model: PolicyValueModel,
    observations: np.ndarray,
    greedy: bool = False,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """int32 actions [B] for observations [B, ...] (greedy, or sampled from the policy)."""
    logits, _ = model.predict(observations)
    return sample_actions(logits, greedy, rng)


def thread_counts(threads: int) -> tuple[int, int]:
    """(intra-op, inter-op) TensorFlow threads for the `threads` knob.

    0 means the cores Slurm gives the task (SLURM_CPUS_PER_TASK); outside Slurm, half the
    cores this process may run on, since a local run's pools and shard share them. Two
    inter-op threads always, so that acting's and training's graphs can run side by side.

    Measured on 2 cores (bench/README.md, "TensorFlow threads on a shared machine"): one
    intra-op thread makes a batch-8 forward pass ~40% cheaper in CPU (no hand-offs between
    threads for small ops) and end to end was 1.00-1.23x (median 1.14x) as fast over 6
    alternated pairs.
    """
    if threads <= 0:
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or max(1, available_cores() // 2)
    return threads, 2


def configure_threads(threads: int) -> int:
    """Sets TensorFlow's thread pools (`thread_counts`); call before any TensorFlow op runs.
    Returns the intra-op count used."""
    intra, inter = thread_counts(threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # TensorFlow already initialized; keep its pools
    return intra
