"""Our optimizers against Keras' on the same gradient sequence.

Adam goes through a real shard process (gradients in by PushPull, parameters out); RMSProp
and SGD are compared in-process. This test module imports TensorFlow; the service never does.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.paramserver.optimizers import Hyper, Optimizer
from tests.paramserver.support import SHAPES, Client, gradients, initial_values, start_shard

STEPS = 25


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def keras_run(tf, optimizer, steps: int = STEPS, lr_at=None) -> dict[str, np.ndarray]:
    variables = {n: tf.Variable(a) for n, a in initial_values().items()}
    for i in range(steps):
        if lr_at is not None:
            optimizer.learning_rate.assign(lr_at(i))
        g = gradients(i)
        optimizer.apply_gradients([(tf.constant(g[n]), variables[n]) for n in SHAPES])
    return {n: v.numpy() for n, v in variables.items()}


def test_adam_on_the_shard_matches_keras_adam(tf, run_dir_factory, processes):
    """The seed's best run: lr 0.001, beta1 0.8, beta2 0.75, epsilon 1e-8."""
    run_dir = run_dir_factory(optimizer="adam", lr=0.001, beta1=0.8, beta2=0.75, epsilon=1e-8)
    start_shard(processes, run_dir)
    client = Client(run_dir)
    client.initialize(initial_values())
    version = 0
    for i in range(STEPS):
        reply, ours = client.push(version, gradients(i))
        version = reply.version
    client.close()
    theirs = keras_run(
        tf, tf.keras.optimizers.Adam(learning_rate=0.001, beta_1=0.8, beta_2=0.75, epsilon=1e-8)
    )
    for name in SHAPES:
        moved = np.abs(ours[name] - initial_values()[name]).max()
        assert moved > 0.005, "the test must move the parameters"
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["rmsprop", "sgd"])
def test_rmsprop_and_sgd_match_keras_with_a_linear_schedule(tf, name):
    hyper = Hyper(
        optimizer=name,
        lr=0.01,
        lr_schedule="linear",
        lr_final=0.002,
        lr_decay_steps=10,
        rmsprop_decay=0.9,
        epsilon=1e-7,
    )
    ours = initial_values()
    optimizer = Optimizer(hyper, {n: a.shape for n, a in ours.items()})
    for i in range(STEPS):
        optimizer.apply(ours, gradients(i), hyper.learning_rate(i))
    keras_opt = (
        tf.keras.optimizers.RMSprop(learning_rate=0.01, rho=0.9, epsilon=1e-7)
        if name == "rmsprop"
        else tf.keras.optimizers.SGD(learning_rate=0.01)
    )
    theirs = keras_run(tf, keras_opt, lr_at=hyper.learning_rate)
    for n in SHAPES:
        np.testing.assert_allclose(ours[n], theirs[n], rtol=2e-6, atol=1e-7)


def test_the_linear_schedule_decays_to_lr_final_and_stays():
    hyper = Hyper(lr=0.01, lr_schedule="linear", lr_final=0.001, lr_decay_steps=100)
    assert hyper.learning_rate(0) == 0.01
    assert hyper.learning_rate(50) == pytest.approx(0.0055)
    assert hyper.learning_rate(100) == hyper.learning_rate(10_000) == pytest.approx(0.001)
    assert Hyper(lr=0.01).learning_rate(10_000) == 0.01


@pytest.mark.parametrize("threads", [1, 3])
def test_large_variables_are_updated_the_same_in_chunks(threads):
    """Variables bigger than one chunk take the chunked path, shared out between threads;
    neither may change the results."""
    from services.paramserver import optimizers

    rng = np.random.default_rng(0)
    big = {"w": rng.standard_normal(optimizers.CHUNK * 7 + 123).astype(np.float32)}
    small = {"w": big["w"].copy()}
    hyper = Hyper(optimizer="adam", lr=0.01, beta1=0.8, beta2=0.75, epsilon=1e-8)
    chunked = Optimizer(hyper, {"w": big["w"].shape}, threads=threads)
    grads = [{"w": rng.standard_normal(big["w"].shape).astype(np.float32)} for _ in range(3)]
    for g in grads:
        chunked.apply(big, g, 0.01)
    # the same arithmetic on whole arrays, written out
    m = np.zeros_like(small["w"])
    v = np.zeros_like(small["w"])
    f = np.float32
    for t, g in enumerate(grads, start=1):
        alpha = f(0.01) * np.sqrt(f(1) - f(0.75) ** f(t)) / (f(1) - f(0.8) ** f(t))
        m += (g["w"] - m) * f(1 - 0.8)
        v += (g["w"] ** 2 - v) * f(1 - 0.75)
        small["w"] -= m * alpha / (np.sqrt(v) + f(1e-8))
    np.testing.assert_allclose(big["w"], small["w"], rtol=1e-6)
