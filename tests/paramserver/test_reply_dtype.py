"""Parameters sent back as bfloat16 in sync mode, in-process: the members of one round may
ask for different types, and each gets the round's new parameters in its own."""

from __future__ import annotations

import threading

import numpy as np

from ba3c import tensors
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import tensor_pb2
from services.paramserver.optimizers import Hyper
from services.paramserver.servicer import parse_push_request
from services.paramserver.shard import PushResult, Settings, Shard
from tests.paramserver.support import gradients, initial_values


def _raw(grads) -> list:
    data = pb.PushPullRequest(gradients=tensors.encode_named(grads)).SerializeToString()
    return parse_push_request(data).gradients


def test_one_round_answers_each_member_in_the_type_it_asked_for():
    shard = Shard(
        Settings(sync=True, replicas=2, sync_timeout=60, hyper=Hyper(optimizer="sgd", lr=1.0))
    )
    shard.initialize("a", tensors.encode_named(initial_values()))
    results: dict[str, PushResult] = {}
    asks = {"a": tensor_pb2.BFLOAT16, "b": tensor_pb2.FLOAT32}
    threads = [
        threading.Thread(
            target=lambda c=client, d=dtype, s=seed: results.__setitem__(
                c, shard.push(c, 0, _raw(gradients(s)), parameters_dtype=d)
            ),
            daemon=True,
        )
        for seed, (client, dtype) in enumerate(asks.items())
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    replies = {c: pb.PushPullResponse.FromString(r.reply) for c, r in results.items()}
    assert {c: (r.outcome, r.version) for c, r in replies.items()} == {
        "a": (pb.APPLIED, 1),
        "b": (pb.APPLIED, 1),
    }
    for client, dtype in asks.items():
        assert {t.tensor.dtype for t in replies[client].parameters} == {dtype}
    exact = tensors.decode_named(replies["b"].parameters)
    rounded = tensors.decode_named(replies["a"].parameters)
    expected = {n: v - (gradients(0)[n] + gradients(1)[n]) / 2 for n, v in initial_values().items()}
    for name, value in expected.items():
        np.testing.assert_allclose(exact[name], value, atol=1e-6)
        bits = tensors.to_bfloat16_bits(exact[name])
        np.testing.assert_array_equal(rounded[name], tensors.from_bfloat16_bits(bits))
