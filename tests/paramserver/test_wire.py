"""The shard's use of the wire codec (ba3c/tensors.py): parameters encoded as protobuf
would, and PushPullRequests parsed as protobuf would (without copying the gradient bytes)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ba3c import tensors
from ba3c.v1 import paramserver_pb2 as pb
from ba3c.v1 import tensor_pb2
from services.paramserver.servicer import parse_push_request


def test_cached_parameters_parse_back_in_both_reply_types():
    rng = np.random.default_rng(0)
    params = {
        "conv/kernel": rng.standard_normal((8, 8, 4, 32)).astype(np.float32),
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "fc/kernel#1/2": rng.standard_normal((200, 512)).astype(np.float32),
    }
    encoded = b"".join(tensors.named_tensors_field(3, params))
    head = pb.PushPullResponse(
        outcome=pb.APPLIED, version=300, staleness=2, env_frames=1 << 40
    ).SerializeToString()
    reply = pb.PushPullResponse.FromString(head + encoded)
    assert (reply.outcome, reply.version, reply.staleness, reply.env_frames) == (
        pb.APPLIED,
        300,
        2,
        1 << 40,
    )
    back = tensors.decode_named(reply.parameters)
    assert list(back) == list(params)
    for name, array in params.items():
        assert back[name].dtype == np.float32 and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
    pulled = pb.PullResponse.FromString(pb.PullResponse(version=7).SerializeToString() + encoded)
    assert pulled.version == 7 and len(pulled.parameters) == len(params)
    assert (
        pb.PushPullResponse(parameters=tensors.encode_named(params)).SerializeToString() == encoded
    )


@settings(max_examples=60, deadline=None)
@given(
    client_id=st.text(max_size=12),
    version=st.integers(-(1 << 63), (1 << 63) - 1),
    env_frames=st.integers(-(1 << 63), (1 << 63) - 1),
    tensors_=st.lists(
        st.tuples(
            st.text(max_size=8),
            st.sampled_from([1, 2, 3, 5]),
            st.lists(st.integers(-3, 1 << 40), max_size=4),
            st.binary(max_size=64),
        ),
        max_size=4,
    ),
)
def test_push_requests_parse_as_protobuf_parses_them(client_id, version, env_frames, tensors_):
    request = pb.PushPullRequest(
        client_id=client_id, version=version, env_frames=env_frames, samples=7
    )
    for name, dtype, shape, data in tensors_:
        request.gradients.add(name=name).tensor.CopyFrom(
            tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data)
        )
    parsed = parse_push_request(request.SerializeToString())
    assert not parsed.error
    message = parsed.message
    assert (message.client_id, message.version, message.env_frames, message.samples) == (
        client_id,
        version,
        env_frames,
        7,
    )
    assert [(t.name, t.dtype, t.shape, bytes(t.data)) for t in parsed.gradients] == [
        (g.name, g.tensor.dtype, list(g.tensor.shape), g.tensor.data) for g in request.gradients
    ]


def test_unpacked_shapes_and_unknown_fields_are_understood():
    # Tensor{dtype=1, shape=2 (unpacked), shape=3 (unpacked), data}, plus unknown field 9
    tensor = bytes([0x08, 1, 0x10, 2, 0x10, 3, 0x1A, 24]) + b"\0" * 24 + bytes([0x48, 5])
    named = bytes([0x0A, 1]) + b"w" + bytes([0x12, len(tensor)]) + tensor
    data = bytes([0x1A, len(named)]) + named + bytes([0x35]) + b"\1\2\3\4"  # fixed32 field 6
    parsed = parse_push_request(data)
    assert not parsed.error
    (t,) = parsed.gradients
    assert (t.name, t.dtype, t.shape, len(t.data)) == ("w", 1, [2, 3], 24)
    assert pb.PushPullRequest.FromString(data).gradients[0].tensor.shape == [2, 3]


@pytest.mark.parametrize(
    "data",
    [
        b"\x1a\x10abc",  # gradients longer than the message
        b"\x10\xff\xff",  # truncated varint
        b"\x0b\x00",  # a group (wire type 3)
        b"\x0a\x02\xff\xfe",  # client_id not UTF-8
    ],
)
def test_malformed_requests_are_reported_not_raised(data):
    assert parse_push_request(data).error.startswith("malformed PushPullRequest")
