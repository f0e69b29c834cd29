"""Model shapes that tests and benchmarks use without building a TensorFlow model."""

# The Nature-DQN CNN of ba3c/models.py for 84x84x4 frames and 4 actions, as
# (variable name, shape); tests/learner/test_models.py checks that the model still has them.
NATURE_CNN: list[tuple[str, tuple[int, ...]]] = [
    ("conv1/kernel", (8, 8, 4, 32)),
    ("conv1/bias", (32,)),
    ("conv2/kernel", (4, 4, 32, 64)),
    ("conv2/bias", (64,)),
    ("conv3/kernel", (3, 3, 64, 64)),
    ("conv3/bias", (64,)),
    ("fc/kernel", (3136, 512)),
    ("fc/bias", (512,)),
    ("policy/kernel", (512, 4)),
    ("policy/bias", (4,)),
    ("value/kernel", (512, 1)),
    ("value/bias", (1,)),
]
