"""The A3C loss and its gradients, as one compiled TensorFlow function.

For a batch of (observation s, action a, n-step return R):

    advantage   A = R - V(s)                      (no gradient through A)
    policy      L_pi = -mean(log pi(a|s) * A)
    entropy     H = mean(-sum_a pi(a|s) log pi(a|s))
    value       L_v = mean((R - V(s))^2)
    total       L = L_pi - entropy_beta * H + value_loss_coef * L_v

Gradients of L are clipped to a global norm of `grad_clip` (0 = no clipping).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ba3c.models import PolicyValueModel

LOSS_PARTS = (
    "total",
    "policy",
    "value",
    "entropy",
    "advantage_mean",
    "grad_norm",
    "grad_norm_clipped",
)


@dataclass
class StepResult:
    gradients: dict[str, np.ndarray]  # by stable variable name
    stats: dict[str, float]  # LOSS_PARTS


def a3c_loss(
    logits: tf.Tensor,
    values: tf.Tensor,
    actions: tf.Tensor,
    returns: tf.Tensor,
    entropy_beta: float,
    value_loss_coef: float,
) -> dict[str, tf.Tensor]:
    """The loss parts above, as scalars."""
    log_probs = tf.nn.log_softmax(logits)
    log_pi_a = tf.reduce_sum(log_probs * tf.one_hot(actions, tf.shape(logits)[1]), axis=1)
    advantage = tf.stop_gradient(returns - values)
    policy = -tf.reduce_mean(log_pi_a * advantage)
    entropy = tf.reduce_mean(-tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=1))
    value = tf.reduce_mean(tf.square(returns - values))
    total = policy - entropy_beta * entropy + value_loss_coef * value
    return {
        "total": total,
        "policy": policy,
        "value": value,
        "entropy": entropy,
        "advantage_mean": tf.reduce_mean(advantage),
    }


def make_train_step(
    model: PolicyValueModel, entropy_beta: float, value_loss_coef: float, grad_clip: float
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], StepResult]:
    """(observations, actions int32, returns float32) -> gradients and loss statistics."""
    names = list(model.variables_by_name)
    variables = model.ordered_variables

    @tf.function(
        input_signature=[
            model.input_signature,
            tf.TensorSpec((None,), tf.int32, name="actions"),
            tf.TensorSpec((None,), tf.float32, name="returns"),
        ]
    )
    def step(observations, actions, returns):
        with tf.GradientTape() as tape:
            logits, values = model.forward(observations)
            parts = a3c_loss(logits, values, actions, returns, entropy_beta, value_loss_coef)
        grads = tape.gradient(parts["total"], variables)
        norm = tf.linalg.global_norm(grads)
        if grad_clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, grad_clip, use_norm=norm)
        parts["grad_norm"] = norm
        parts["grad_norm_clipped"] = tf.linalg.global_norm(grads)
        return grads, parts

    def run(observations: np.ndarray, actions: np.ndarray, returns: np.ndarray) -> StepResult:
        grads, parts = step(
            observations, np.asarray(actions, np.int32), np.asarray(returns, np.float32)
        )
        return StepResult(
            gradients={n: g.numpy() for n, g in zip(names, grads, strict=True)},
            stats={k: float(v) for k, v in parts.items()},
        )

    return run
