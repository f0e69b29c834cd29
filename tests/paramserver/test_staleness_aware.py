"""Staleness-aware async updates (--staleness_aware): a push's step is divided by its
staleness, in-process on a Shard with SGD so the arithmetic is exact."""

from __future__ import annotations

import numpy as np
import pytest

from ba3c import tensors
from ba3c.v1 import paramserver_pb2 as pb
from services.paramserver.optimizers import Hyper
from services.paramserver.servicer import parse_push_request
from services.paramserver.shard import Settings, Shard
from tests.paramserver.support import gradients, initial_values


def raw(grads) -> list:
    data = pb.PushPullRequest(gradients=tensors.encode_named(grads)).SerializeToString()
    return parse_push_request(data).gradients


def parameters(shard: Shard) -> dict[str, np.ndarray]:
    reply, named = tensors.parse(shard.pull(-1), pb.PullResponse)
    return tensors.decode_named(named)


@pytest.mark.parametrize("aware", [True, False])
def test_a_stale_push_takes_a_step_divided_by_its_staleness(aware):
    shard = Shard(Settings(staleness_aware=aware, hyper=Hyper(optimizer="sgd", lr=0.5)))
    shard.initialize("learner-0", tensors.encode_named(initial_values()))
    for seed in (1, 2):  # two fresh pushes: version 2
        shard.push("learner-0", shard.version, raw(gradients(seed)))
    before = parameters(shard)
    result = shard.push("learner-1", 0, raw(gradients(3)))  # computed at version 0
    assert (result.outcome, result.staleness, result.version) == (pb.APPLIED, 2, 3)
    lr = 0.5 / 2 if aware else 0.5
    after = parameters(shard)
    for name, g in gradients(3).items():
        np.testing.assert_allclose(after[name], before[name] - lr * g, rtol=1e-6, atol=1e-6)
