"""The hand-written encoding of the parameters field parses as protobuf would."""

from __future__ import annotations

import numpy as np

from ba3c import tensors
from ba3c.v1 import paramserver_pb2 as pb
from services.paramserver import wire


def test_cached_parameters_parse_back_in_both_reply_types():
    rng = np.random.default_rng(0)
    params = {"conv/kernel": rng.standard_normal((8, 8, 4, 32)).astype(np.float32),
              "scalar": np.array(3.5, np.float32), "empty": np.zeros((0, 3), np.float32),
              "fc/kernel#1/2": rng.standard_normal((200, 512)).astype(np.float32)}
    encoded = wire.encode_parameters(params)
    head = pb.PushPullResponse(outcome=pb.APPLIED, version=300, staleness=2,
                               env_frames=1 << 40).SerializeToString()
    reply = pb.PushPullResponse.FromString(head + encoded)
    assert (reply.outcome, reply.version, reply.staleness, reply.env_frames) == (
        pb.APPLIED, 300, 2, 1 << 40)
    back = tensors.decode_named(reply.parameters)
    assert list(back) == list(params)
    for name, array in params.items():
        assert back[name].dtype == np.float32 and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
    pulled = pb.PullResponse.FromString(pb.PullResponse(version=7).SerializeToString() + encoded)
    assert pulled.version == 7 and len(pulled.parameters) == len(params)
    assert pb.PushPullResponse(parameters=tensors.encode_named(params)).SerializeToString() \
        == encoded
