"""The compiled update (kernels.py) against the numpy reference maths in optimizers.py:
the same parameters and slots to 1e-6 for every optimizer and gradient dtype, a sync
round's sum and mean, and a check that catches NaN and Inf in every wire format.
In-process, no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ba3c import tensors
from services.paramserver import kernels
from services.paramserver.optimizers import NAMES, Hyper, Optimizer
from services.paramserver.sync import Round

SHAPES = {"conv/kernel": (3, 3, 4, 8), "fc/kernel": (300, 70), "bias": (8,), "scalar": ()}


def wire_form(g: np.ndarray, dtype: str) -> np.ndarray:
    """A float32 gradient as the shard holds it after checking: float32, bfloat16 bits
    (uint16) or float16."""
    if dtype == "bfloat16":
        return tensors.to_bfloat16_bits(g)
    return g.astype(dtype)


def run_both(hyper, grads_seq, threads=1, scales=None):
    rng = np.random.default_rng(1)
    start = {n: np.array(0.1 * rng.standard_normal(s), np.float32) for n, s in SHAPES.items()}
    out = []
    for compiled in (True, False):
        params = {n: a.copy() for n, a in start.items()}
        opt = Optimizer(hyper, SHAPES, threads=threads, compiled=compiled)
        for i, grads in enumerate(grads_seq):
            scale = scales[i] if scales else 1.0
            opt.apply(params, grads, hyper.learning_rate(i), scale)
        out.append((params, opt.slots))
    return out, start


def assert_same(compiled, reference, start):
    (p1, s1), (p2, s2) = compiled, reference
    moved = [name for name in SHAPES if not np.array_equal(p1[name], start[name])]
    assert len(moved) >= 3, "the test must move the parameters"
    for name in SHAPES:
        np.testing.assert_allclose(p1[name], p2[name], rtol=1e-6, atol=1e-7)
        for slot in s1:
            np.testing.assert_allclose(s1[slot][name], s2[slot][name], rtol=1e-6, atol=1e-12)


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    dtype=st.sampled_from(["float32", "bfloat16", "float16"]),
    lr=st.floats(1e-3, 0.1),
    beta1=st.floats(0.5, 0.99),
    beta2=st.floats(0.5, 0.9999),
    epsilon=st.sampled_from([1e-8, 1e-7, 1e-3]),
    decay=st.floats(0.5, 0.99),
    grad_scale=st.sampled_from([1e-2, 1.0, 100.0]),
    seed=st.integers(0, 1000),
)
def test_compiled_update_matches_the_numpy_reference(
    name, dtype, lr, beta1, beta2, epsilon, decay, grad_scale, seed
):
    hyper = Hyper(
        optimizer=name,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        rmsprop_decay=decay,
        lr_schedule="linear",
        lr_final=lr / 10,
        lr_decay_steps=4,
    )
    rng = np.random.default_rng(seed)
    grads_seq = [
        {
            n: wire_form(np.array(grad_scale * rng.standard_normal(s), np.float32), dtype)
            for n, s in SHAPES.items()
        }
        for _ in range(6)
    ]
    (compiled, reference), start = run_both(hyper, grads_seq)
    assert_same(compiled, reference, start)


@pytest.mark.parametrize("name", NAMES)
def test_threads_and_a_sync_mean_change_nothing(name):
    """Big variables split between threads, and a gradient scaled by 1/N in the pass."""
    rng = np.random.default_rng(2)
    big = {"w": (600, 300)}  # 180,000 elements: above PARALLEL_MIN
    hyper = Hyper(optimizer=name, lr=0.01)
    grads = [{"w": rng.standard_normal(big["w"]).astype(np.float32)} for _ in range(3)]
    params = [{"w": np.ones(big["w"], np.float32)} for _ in range(2)]
    opts = [
        Optimizer(hyper, big, threads=3, compiled=True),
        Optimizer(hyper, big, compiled=False),
    ]
    for g in grads:
        for p, opt in zip(params, opts, strict=True):
            opt.apply(p, g, 0.01, scale=1 / 3)
    np.testing.assert_allclose(params[0]["w"], params[1]["w"], rtol=1e-6, atol=1e-7)


def test_a_sync_round_sums_in_place_and_returns_the_scale():
    rng = np.random.default_rng(3)
    pushes = [{"w": rng.standard_normal((5, 7)).astype(np.float32)} for _ in range(3)]
    sums = {"w": np.full((5, 7), np.nan, np.float32)}  # stale contents are overwritten
    rnd = Round(0, 10.0, sums=sums)
    rnd.add("a", pushes[0])
    rnd.add("b", {"w": tensors.to_bfloat16_bits(pushes[1]["w"])})
    rnd.add("c", {"w": pushes[2]["w"].astype(np.float16)})
    total, scale = rnd.average()
    assert total["w"] is sums["w"] and scale == pytest.approx(1 / 3)
    expected = (
        pushes[0]["w"]
        + tensors.from_bfloat16_bits(tensors.to_bfloat16_bits(pushes[1]["w"]))
        + pushes[2]["w"].astype(np.float16).astype(np.float32)
    )
    np.testing.assert_allclose(total["w"], expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_check_finds_nan_and_inf_anywhere(dtype, bad):
    g = np.linspace(-3e4, 3e4, 1001).astype(np.float32)
    assert kernels.all_finite(kernels.as_kernel_input(wire_form(g, dtype)))
    for where in (0, 500, 1000):
        spoiled = g.copy()
        spoiled[where] = bad
        assert not kernels.all_finite(kernels.as_kernel_input(wire_form(spoiled, dtype)))


def test_huge_but_finite_gradients_pass_the_check():
    g = np.full(64, np.finfo(np.float32).max, np.float32)
    assert kernels.all_finite(g)  # a sum would overflow to Inf; the check must not


def test_kernels_compile_without_a_writable_cache(tmp_path):
    """A read-only install with no writable home (a container) must still start: the
    kernels then compile at every start instead of failing to import."""
    env = {
        **os.environ,
        # numba finds no cache directory at all (as in a read-only image without HOME)
        "NUMBA_CACHE_LOCATOR_CLASSES": "_IPythonCacheLocator",
    }
    code = (
        "import numpy as np\n"
        "from services.paramserver import kernels\n"
        "assert not kernels.all_finite(np.array([1, np.nan], np.float32))\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
