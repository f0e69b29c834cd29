"""The A3C loss parts against numpy, gradient clipping, and the direction of an update."""

import numpy as np
import pytest
import tensorflow as tf

from ba3c import models
from ba3c.config import Config
from services.learner.a3c import a3c_loss, make_train_step


def test_loss_parts_match_a_numpy_computation():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 3)).astype(np.float32)
    values = rng.standard_normal(6).astype(np.float32)
    actions = np.array([0, 1, 2, 2, 1, 0], np.int32)
    returns = rng.standard_normal(6).astype(np.float32)
    parts = a3c_loss(
        tf.constant(logits),
        tf.constant(values),
        tf.constant(actions),
        tf.constant(returns),
        entropy_beta=0.01,
        value_loss_coef=0.5,
    )

    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    adv = returns - values
    policy = -np.mean(np.log(p[np.arange(6), actions]) * adv)
    entropy = np.mean(-(p * np.log(p)).sum(1))
    value = np.mean(adv**2)
    assert float(parts["policy"]) == pytest.approx(policy, rel=1e-5)
    assert float(parts["entropy"]) == pytest.approx(entropy, rel=1e-5)
    assert float(parts["value"]) == pytest.approx(value, rel=1e-5)
    assert float(parts["total"]) == pytest.approx(policy - 0.01 * entropy + 0.5 * value, rel=1e-5)
    assert float(parts["advantage_mean"]) == pytest.approx(adv.mean(), rel=1e-5, abs=1e-6)


def mlp():
    cfg = Config()
    cfg.model.model = "mlp"
    return models.build_model(cfg, (4,), 2)


BATCH = (
    np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32),
    np.zeros(32, np.int32),
    np.full(32, 5.0, np.float32),
)


def test_gradients_are_clipped_to_the_global_norm():
    model = mlp()
    free = make_train_step(model, 0.01, 0.5, grad_clip=0)(*BATCH)
    clipped = make_train_step(model, 0.01, 0.5, grad_clip=0.1)(*BATCH)
    assert free.stats["grad_norm"] > 0.1
    assert free.stats["grad_norm_clipped"] == pytest.approx(free.stats["grad_norm"])
    assert clipped.stats["grad_norm_clipped"] == pytest.approx(0.1, rel=1e-4)
    norm = np.sqrt(sum(float(np.sum(g**2)) for g in clipped.gradients.values()))
    assert norm == pytest.approx(0.1, rel=1e-4)
    scale = 0.1 / free.stats["grad_norm"]
    for name, g in free.gradients.items():
        np.testing.assert_allclose(clipped.gradients[name], g * scale, rtol=1e-4, atol=1e-7)


def test_a_descent_step_makes_a_rewarded_action_likelier_and_values_closer():
    model = mlp()
    step = make_train_step(model, 0.0, 0.5, grad_clip=0)
    observations, actions, returns = BATCH  # action 0 always, return 5 > V
    before_logits, before_values = model(observations)
    result = step(observations, actions, returns)
    weights = models.get_weights(model)
    models.set_weights(model, {n: weights[n] - 0.05 * g for n, g in result.gradients.items()})
    after_logits, after_values = model(observations)
    p_before = tf.nn.softmax(before_logits)[:, 0].numpy()
    p_after = tf.nn.softmax(after_logits)[:, 0].numpy()
    assert np.mean(p_after) > np.mean(p_before)
    assert np.mean(np.abs(5 - after_values.numpy())) < np.mean(np.abs(5 - before_values.numpy()))
    assert set(result.gradients) == set(weights)
