"""Optimizers applied on a parameter-server shard: Adam, RMSProp and SGD, plus the
learning-rate schedule.

The update rules are written exactly as Keras 3 writes them (`keras.optimizers.Adam`,
`RMSprop`, `SGD`), in float32, so a shard gives the same parameters as
`tf.keras.optimizers.Adam` on the same gradient sequence (tests/paramserver checks it).

The shard runs them compiled (`kernels.py`: one pass per variable, gradients read as they
arrived, bfloat16 included). The numpy functions below are the same maths written as
numpy passes: the reference the compiled kernels are tested against (`compiled=False`).
There, large variables are updated in chunks of `CHUNK` elements so that the handful of
passes run on data that stays in the CPU cache. With `threads` > 1 large variables are
shared out between threads (both numba's kernels and numpy release the GIL).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass

import numpy as np

from ba3c import tensors
from services.paramserver import kernels

CHUNK = 1 << 16
PARALLEL_MIN = 1 << 17  # a variable this big is split between the threads
NAMES = ("adam", "rmsprop", "sgd")


@dataclass(frozen=True)
class Hyper:
    """The optimizer knobs (see ba3c/config.py OptimizerConfig)."""

    optimizer: str = "adam"
    lr: float = 0.001
    lr_schedule: str = "constant"
    lr_final: float = 0.0
    lr_decay_steps: int = 1_000_000
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-7
    rmsprop_decay: float = 0.9

    @classmethod
    def from_config(cls, optim) -> Hyper:
        return cls(
            optimizer=optim.optimizer,
            lr=optim.lr,
            lr_schedule=optim.lr_schedule,
            lr_final=optim.lr_final,
            lr_decay_steps=optim.lr_decay_steps,
            beta1=optim.beta1,
            beta2=optim.beta2,
            epsilon=optim.epsilon,
            rmsprop_decay=optim.rmsprop_decay,
        )

    def learning_rate(self, position: int) -> float:
        """The learning rate at schedule position `position` (the shard's version)."""
        if self.lr_schedule == "linear":
            frac = min(max(position, 0), self.lr_decay_steps) / max(1, self.lr_decay_steps)
            return self.lr + (self.lr_final - self.lr) * frac
        return self.lr


# Optimizer state slots per optimizer, each shaped like the variable.
SLOTS: dict[str, tuple[str, ...]] = {"adam": ("m", "v"), "rmsprop": ("velocity",), "sgd": ()}


class Optimizer:
    """Holds the slots of every variable and applies one (averaged) gradient per step.

    `step` counts the updates applied so far (Adam's bias correction uses step + 1).
    Gradients may be float32, bfloat16 bit patterns (uint16) or float16 arrays.
    `compiled=False` runs the numpy reference instead of the kernels.
    """

    def __init__(
        self,
        hyper: Hyper,
        shapes: Mapping[str, tuple[int, ...]],
        threads: int = 1,
        compiled: bool = True,
    ):
        if hyper.optimizer not in SLOTS:
            raise ValueError(f"unknown optimizer {hyper.optimizer!r}; use one of {NAMES}")
        self.hyper = hyper
        self.compiled = compiled
        self.step = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {
            slot: {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
            for slot in SLOTS[hyper.optimizer]
        }
        largest = max((int(np.prod(s, dtype=np.int64)) for s in shapes.values()), default=0)
        size = min(largest, CHUNK)
        threads = max(1, min(threads, 8))
        self._scratch = [
            (np.empty(size, np.float32), np.empty(size, np.float32)) for _ in range(threads)
        ]
        self._pool = (
            futures.ThreadPoolExecutor(threads, thread_name_prefix="optimizer")
            if threads > 1
            else None
        )

    @property
    def name(self) -> str:
        return self.hyper.optimizer

    def load_state(self, step: int, slots: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Restores `step` and the slots (from a checkpoint); shapes must match."""
        for slot, arrays in self.slots.items():
            for name, array in arrays.items():
                saved = slots[slot][name]
                if saved.shape != array.shape:
                    raise ValueError(
                        f"slot {slot} of {name!r}: shape {saved.shape} in the "
                        f"checkpoint, {array.shape} expected"
                    )
                array[...] = saved
        self.step = int(step)

    def _constants(self, lr: float) -> tuple[np.float32, ...]:
        h = self.hyper
        f32 = np.float32
        lr32 = f32(lr)
        if h.optimizer == "adam":
            t = f32(self.step + 1)
            alpha = lr32 * np.sqrt(f32(1) - f32(h.beta2) ** t) / (f32(1) - f32(h.beta1) ** t)
            return (f32(1 - h.beta1), f32(1 - h.beta2), f32(alpha), f32(h.epsilon))
        if h.optimizer == "rmsprop":
            return (f32(h.rmsprop_decay), f32(1 - h.rmsprop_decay), lr32, f32(h.epsilon))
        return (lr32,)

    def apply(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        lr: float,
        scale: float = 1.0,
    ) -> None:
        """params -= update(grads * scale), in place, for every variable of `params`
        (`scale` 1/N turns a sync round's sum into its mean)."""
        consts = self._constants(lr)
        if self.compiled:
            self._apply_compiled(params, grads, np.float32(scale), consts)
        else:
            self._apply_numpy(params, grads, np.float32(scale), consts)
        self.step += 1

    def _apply_compiled(self, params, grads, scale, consts) -> None:
        update = kernels.UPDATES[self.hyper.optimizer]
        parts = len(self._scratch) if self._pool is not None else 1
        work = []
        for name, p in params.items():
            flat_p, flat_g = p.reshape(-1), kernels.as_kernel_input(np.asarray(grads[name]))
            slots = [self.slots[s][name].reshape(-1) for s in SLOTS[self.hyper.optimizer]]
            cuts = parts if flat_p.size >= PARALLEL_MIN else 1
            bounds = [flat_p.size * k // cuts for k in range(cuts + 1)]
            for a, b in zip(bounds, bounds[1:], strict=False):
                work.append((flat_p[a:b], flat_g[a:b], *(s[a:b] for s in slots)))

        def run(arrays) -> None:
            update(*arrays, scale, *consts)

        if self._pool is None or len(work) <= len(params):
            for arrays in work:
                run(arrays)
        else:
            list(self._pool.map(run, work))

    def _apply_numpy(self, params, grads, scale, consts) -> None:
        update = _UPDATES[self.hyper.optimizer]
        work = []
        for name, p in params.items():
            flat_p, flat_g = p.reshape(-1), _widened(np.asarray(grads[name]), scale)
            slots = [self.slots[s][name].reshape(-1) for s in SLOTS[self.hyper.optimizer]]
            for start in range(0, flat_p.size, CHUNK):
                stop = min(start + CHUNK, flat_p.size)
                work.append(
                    (flat_p[start:stop], flat_g[start:stop], [s[start:stop] for s in slots])
                )

        def run(share: int) -> None:
            t1, t2 = self._scratch[share]
            for p_chunk, g_chunk, slot_chunks in work[share :: len(self._scratch)]:
                n = p_chunk.size
                update(p_chunk, g_chunk, slot_chunks, consts, t1[:n], t2[:n])

        if self._pool is None or len(work) < 2 * len(self._scratch):
            for share in range(len(self._scratch)):
                run(share)
        else:  # numpy releases the GIL inside each call, so the shares run in parallel
            list(self._pool.map(run, range(len(self._scratch))))


def _widened(g: np.ndarray, scale: np.float32) -> np.ndarray:
    """A gradient as flat float32 (bfloat16 bits widened, float16 converted), times scale."""
    if g.dtype == np.uint16:
        g = tensors.from_bfloat16_bits(g)
    g = g.reshape(-1).astype(np.float32, copy=False)
    return g * scale if scale != 1 else g


def _adam(p, g, slots, consts, t1, t2) -> None:
    m, v = slots
    one_minus_b1, one_minus_b2, alpha, eps = consts
    np.subtract(g, m, out=t1)
    t1 *= one_minus_b1
    m += t1  # m += (g - m) * (1 - beta1)
    np.square(g, out=t1)
    t1 -= v
    t1 *= one_minus_b2
    v += t1  # v += (g^2 - v) * (1 - beta2)
    np.sqrt(v, out=t1)
    t1 += eps
    np.multiply(m, alpha, out=t2)
    t2 /= t1
    p -= t2  # p -= m * alpha / (sqrt(v) + eps)


def _rmsprop(p, g, slots, consts, t1, t2) -> None:
    (velocity,) = slots
    rho, one_minus_rho, lr, eps = consts
    np.square(g, out=t1)
    t1 *= one_minus_rho
    velocity *= rho
    velocity += t1  # velocity = rho * velocity + (1 - rho) * g^2
    np.add(velocity, eps, out=t1)
    np.sqrt(t1, out=t1)
    np.multiply(g, lr, out=t2)
    t2 /= t1
    p -= t2  # p -= lr * g / sqrt(velocity + eps)


def _sgd(p, g, slots, consts, t1, t2) -> None:
    (lr,) = consts
    np.multiply(g, lr, out=t1)
    p -= t1


_UPDATES = {"adam": _adam, "rmsprop": _rmsprop, "sgd": _sgd}
