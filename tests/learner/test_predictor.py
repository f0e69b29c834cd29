"""The predictor batches concurrent requests into one forward pass and routes results."""

import threading
import time

import numpy as np

from services.learner.predictor import Predictor, PredictorStopped


class Recorder:
    """A forward pass in numpy: logits = obs, value = obs sum; records batch sizes."""

    def __init__(self):
        self.sizes = []

    def __call__(self, observations):
        self.sizes.append(len(observations))
        return observations.copy(), observations.sum(axis=1)


def run_concurrently(predictor, inputs):
    results = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def call(i):
        barrier.wait()
        results[i] = predictor.predict(inputs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_each_caller_gets_the_results_of_its_own_observations():
    forward = Recorder()
    predictor = Predictor(forward, max_batch=64, max_wait=0.5, waiting_streams_limit=lambda: 4)
    inputs = [np.full((3, 2), i, np.float32) for i in range(4)]
    results = run_concurrently(predictor, inputs)
    predictor.stop()
    for i, (logits, values) in enumerate(results):
        np.testing.assert_array_equal(logits, inputs[i])
        np.testing.assert_array_equal(values, np.full(3, 2 * i))


def test_concurrent_requests_share_one_forward_pass():
    forward = Recorder()
    predictor = Predictor(forward, max_batch=64, max_wait=5.0, waiting_streams_limit=lambda: 4)
    run_concurrently(predictor, [np.ones((4, 2), np.float32)] * 4)
    predictor.stop()
    # all four streams were waiting, so the batch closed at once with everything in it
    assert forward.sizes == [16]


def test_batches_never_exceed_the_size_bound():
    forward = Recorder()
    predictor = Predictor(forward, max_batch=8, max_wait=0.5, waiting_streams_limit=lambda: 6)
    run_concurrently(predictor, [np.ones((3, 2), np.float32)] * 6)
    predictor.stop()
    assert sum(forward.sizes) == 18
    assert max(forward.sizes) <= 8


def test_a_lone_stream_does_not_wait_for_others_and_runs_in_its_own_thread():
    threads = []

    def forward(observations):
        threads.append(threading.current_thread())
        return observations, observations.sum(axis=1)

    predictor = Predictor(forward, max_batch=64, max_wait=5.0, waiting_streams_limit=lambda: 1)
    start = time.monotonic()
    for _ in range(5):
        predictor.predict(np.ones((2, 2), np.float32))
    elapsed = time.monotonic() - start
    predictor.stop()
    assert threads == [threading.current_thread()] * 5
    assert elapsed < 2.5, f"5 lone requests took {elapsed:.2f}s: the predictor waited"


def test_a_failing_forward_pass_reaches_the_caller_and_the_predictor_carries_on():
    calls = []

    def forward(observations):
        calls.append(len(observations))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return observations, observations.sum(axis=1)

    predictor = Predictor(forward, max_batch=8, max_wait=0.01)
    try:
        predictor.predict(np.ones((1, 2), np.float32))
    except RuntimeError as e:
        assert "boom" in str(e)
    else:
        raise AssertionError("the error was swallowed")
    logits, _ = predictor.predict(np.ones((1, 2), np.float32))
    assert logits.shape == (1, 2)
    predictor.stop()
    try:
        predictor.predict(np.ones((1, 2), np.float32))
    except PredictorStopped:
        pass
    else:
        raise AssertionError("a stopped predictor accepted a request")
