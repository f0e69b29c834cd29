"""The shared networks: shapes, stable names, determinism, weights in and out, actions."""

import numpy as np
import pytest

from ba3c import models
from ba3c.config import Config
from ba3c.machine import available_cores
from tests.support.models import NATURE_CNN


def config(**model_knobs):
    cfg = Config()
    for name, value in model_knobs.items():
        setattr(cfg.model, name, value)
    return cfg


IMAGE = (84, 84, 4)


@pytest.mark.parametrize(
    "kind, shape, params",
    [
        ("nature", IMAGE, 1_687_719),
        ("tensorpack", IMAGE, 3_379_527),
        ("mlp", (4,), 4 * 64 + 64 + 64 * 64 + 64 + 64 * 6 + 6 + 64 + 1),
    ],
)
def test_each_network_maps_observations_to_logits_and_values(kind, shape, params):
    model = models.build_model(config(model=kind), shape, 6)
    dtype = np.uint8 if len(shape) == 3 else np.float32
    logits, values = model(np.zeros((5, *shape), dtype))
    assert logits.shape == (5, 6) and values.shape == (5,)
    total = sum(int(np.prod(s)) for _, s in models.variable_names_and_shapes(model))
    assert total == params


def test_auto_picks_nature_for_images_and_mlp_for_vectors():
    assert models.build_model(config(), IMAGE, 4).kind == "nature"
    assert models.build_model(config(), (8,), 2).kind == "mlp"


def test_a_network_that_does_not_fit_the_observations_is_refused():
    with pytest.raises(models.ModelError, match="image observations"):
        models.build_model(config(model="nature"), (4,), 2)
    with pytest.raises(models.ModelError, match="vector observations"):
        models.build_model(config(model="mlp"), IMAGE, 2)


def test_names_are_stable_and_do_not_depend_on_what_else_was_built():
    first = models.variable_names_and_shapes(models.build_model(config(), IMAGE, 4))
    models.build_model(config(model="mlp"), (8,), 3)
    again = models.variable_names_and_shapes(models.build_model(config(), IMAGE, 4))
    assert first == again
    assert first == NATURE_CNN  # the shapes tests and benchmarks use without TensorFlow


def test_the_seed_decides_the_initial_values():
    cfg = config(model="mlp")
    a = models.get_weights(models.build_model(cfg, (4,), 2))
    b = models.get_weights(models.build_model(cfg, (4,), 2))
    cfg.run.seed = 1
    c = models.get_weights(models.build_model(cfg, (4,), 2))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["hidden1/kernel"], c["hidden1/kernel"])


def test_set_weights_loads_values_and_refuses_a_bad_map_without_changing_anything():
    model = models.build_model(config(model="mlp"), (4,), 2)
    before = models.get_weights(model)
    new = {name: np.full(v.shape, 0.5, np.float32) for name, v in before.items()}
    models.set_weights(model, new)
    assert all(np.all(v == 0.5) for v in models.get_weights(model).values())
    bad = dict(new, **{"hidden1/bias": np.zeros(3, np.float32)})
    bad["policy/bias"] = np.zeros(2, np.float32)  # valid, and must not be applied
    with pytest.raises(models.ModelError, match="hidden1/bias"):
        models.set_weights(model, bad)
    with pytest.raises(models.ModelError, match="unknown"):
        models.set_weights(model, {"nope": np.zeros(1)})
    assert np.all(models.get_weights(model)["policy/bias"] == 0.5)


def test_the_assignment_splits_the_fc_kernel_over_the_shards():
    cfg = config(fc_splits=4)
    cfg.paramserver.ps = 2
    model = models.build_model(cfg, IMAGE, 4)
    layout = models.assignment(cfg, model)
    fc = [p for p in layout.pieces if p.variable == "fc/kernel"]
    assert [p.name for p in fc] == [f"fc/kernel#{i}/4" for i in range(4)]
    assert {p.shard for p in fc} == {0, 1}
    weights = models.get_weights(model)
    joined = layout.join({k: v for shard in layout.split(weights) for k, v in shard.items()})
    np.testing.assert_array_equal(joined["fc/kernel"], weights["fc/kernel"])


def test_images_are_scaled_to_unit_range_inside_the_model():
    model = models.build_model(config(), IMAGE, 3)
    white = np.full((1, *IMAGE), 255, np.uint8)
    logits, _ = model(white)
    assert np.all(np.isfinite(logits.numpy()))
    # the same computation by hand on 1.0 inputs, through the first layer only
    import tensorflow as tf

    w = model.variables_by_name
    x = tf.nn.relu(
        tf.nn.conv2d(tf.ones((1, *IMAGE)), w["conv1/kernel"], 4, "VALID") + w["conv1/bias"]
    )
    assert float(tf.reduce_max(x)) < 10  # unscaled (255) inputs would give ~255x more


def test_greedy_actions_are_the_argmax_and_sampled_ones_follow_the_softmax():
    logits = np.log(np.array([[0.7, 0.2, 0.1]] * 20_000))
    assert set(models.sample_actions(logits, greedy=True)) == {0}
    sampled = models.sample_actions(logits, greedy=False, rng=np.random.default_rng(1))
    freq = np.bincount(sampled, minlength=3) / len(sampled)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.015)
    model = models.build_model(config(model="mlp"), (4,), 2)
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    logits, _ = model(obs)
    np.testing.assert_array_equal(
        models.act(model, obs, greedy=True), np.argmax(logits.numpy(), axis=1)
    )
    assert models.act(model, obs, greedy=False, rng=3).dtype == np.int32


def test_predict_is_the_forward_pass_as_numpy_and_follows_new_weights():
    model = models.build_model(config(model="mlp"), (4,), 3)
    obs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    logits, values = model.predict(obs)
    assert isinstance(logits, np.ndarray) and logits.shape == (5, 3) and values.shape == (5,)
    expected = model(obs)
    np.testing.assert_array_equal(logits, expected[0].numpy())
    np.testing.assert_array_equal(values, expected[1].numpy())
    # the traced function reads the variables, not values captured when it was traced
    models.set_weights(model, {"value/bias": np.array([7.0], np.float32)})
    np.testing.assert_allclose(model.predict(obs)[1], values + 7.0, rtol=1e-5)  # bias was 0
    assert model.predict(obs[:1].astype(np.float64))[0].shape == (1, 3)  # any batch, cast


def test_thread_count_follows_slurm_then_the_machine(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert models.configure_threads(0) == 3
    assert models.configure_threads(5) == 5
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert models.configure_threads(0) == max(1, available_cores() // 2)


def test_acting_and_training_always_get_two_inter_op_threads(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    # one inter-op thread would run the trainer's and the predictor's graphs one at a time
    assert models.thread_counts(1) == (1, 2)
    assert models.thread_counts(8) == (8, 2)
    monkeypatch.setattr(models, "available_cores", lambda: 2)
    assert models.thread_counts(0) == (1, 2)
    monkeypatch.setattr(models, "available_cores", lambda: 16)
    assert models.thread_counts(0) == (8, 2)


def test_the_seeds_cnn_has_valid_5x5_convolutions_without_biases():
    model = models.build_model(config(model="seed", fc_neurons=128), IMAGE, 6)
    shapes = dict(models.variable_names_and_shapes(model))
    assert [n for n in shapes if n.startswith("conv")] == [
        "conv0/kernel",
        "conv1/kernel",
        "conv2/kernel",
        "conv3/kernel",
    ]
    assert shapes["conv2/kernel"] == (5, 5, 32, 64)
    # 84 -> conv 80 -> pool 40 -> conv 36 -> pool 18 -> conv 14 -> pool 7 -> conv 5
    assert shapes["fc/kernel"] == (5 * 5 * 64, 128)
    logits, values = model(np.zeros((2, *IMAGE), np.uint8))
    assert logits.shape == (2, 6) and values.shape == (2,)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 322_695


def test_fc_neurons_shapes_the_nature_network():
    model = models.build_model(config(model="nature", fc_neurons=256), IMAGE, 4)
    shapes = dict(models.variable_names_and_shapes(model))
    assert shapes["fc/kernel"] == (3136, 256) and shapes["policy/kernel"] == (256, 4)


def test_the_seeds_initializers_have_its_scales():
    model = models.build_model(
        config(model="seed", fc_neurons=128, conv_init="normal", fc_init="uniform"), IMAGE, 4
    )
    w = models.get_weights(model)
    conv = w["conv1/kernel"]
    assert abs(conv.std() - 0.03 * 0.88) < 0.003  # a normal truncated at 2 sd: sd x 0.88
    assert np.abs(conv).max() <= 0.06 + 1e-6
    fc = w["fc/kernel"]
    limit = 1.43 * np.sqrt(3 / 1600)
    assert np.abs(fc).max() <= limit and np.abs(fc).max() > 0.95 * limit
    uniform = models.build_model(config(model="seed", conv_init="uniform"), IMAGE, 4)
    assert np.abs(models.get_weights(uniform)["conv0/kernel"]).max() <= 0.05
    ours = models.build_model(config(model="seed"), IMAGE, 4)
    assert not np.allclose(models.get_weights(ours)["conv1/kernel"].std(), conv.std(), rtol=0.2)
