"""An evaluation in progress goes on for at most eval_stop_grace seconds after a stop
request, then ends within one agent step (the evaluator must stop within its grace even in
the middle of a long Breakout episode)."""

from __future__ import annotations

import threading

import pytest

from ba3c import config as configuration
from ba3c import models


def test_a_stop_request_interrupts_an_evaluation_after_its_grace():
    from services.evaluator.evaluation import Evaluation, Stopped

    cfg = configuration.Config()
    cfg.run.env = "CartPole-v1"
    cfg.evaluator.eval_episodes = 3
    cfg.evaluator.eval_stop_grace = 0.0
    evaluation = Evaluation(cfg, None)
    weights = models.get_weights(evaluation.model)
    stop = threading.Event()
    steps = []
    policy = evaluation._policy

    def counting(observation, rng):
        steps.append(1)
        if len(steps) == 5:
            stop.set()
        return policy(observation, rng)

    evaluation._policy = counting
    try:
        with pytest.raises(Stopped):
            evaluation.run(weights, 0, 0, stop=stop)
        assert len(steps) == 5  # the step that saw the request raised; nothing more was played
        # With a grace longer than the evaluation, a stop request lets it finish.
        cfg.evaluator.eval_stop_grace = 600.0
        assert len(evaluation.run(weights, 0, 0, stop=stop).episodes) == 3
    finally:
        evaluation.close()
