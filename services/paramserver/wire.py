"""Parameters on the wire, encoded once per version and reused for every caller.

`PushPullResponse` and `PullResponse` both carry the parameters in field 3
(`repeated NamedTensor parameters = 3`). Protocol buffers allow a message to be the
concatenation of its fields' encodings, so the shard encodes that field once per version
(`encode_parameters`) and every reply is its few small fields (`SerializeToString()` of a
message without parameters) followed by those cached bytes. The encoding is written by
hand so the parameter bytes are copied exactly once (numpy buffer -> reply bytes);
tests/paramserver checks that protobuf parses it back to the same arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ba3c.v1 import tensor_pb2

PARAMETERS_FIELD = 3


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _length_delimited_header(field: int, length: int) -> bytes:
    return _key(field, 2) + _varint(length)


def encode_parameters(params: Mapping[str, np.ndarray], field: int = PARAMETERS_FIELD) -> bytes:
    """The encoding of `repeated NamedTensor <field>` holding float32 `params`."""
    parts: list[bytes | memoryview] = []
    for name, array in params.items():
        array = np.require(array, dtype="<f4", requirements="C")
        data = memoryview(array.reshape(-1).view(np.uint8))
        shape = b"".join(_varint(int(d)) for d in array.shape)
        tensor_head = _key(1, 0) + _varint(tensor_pb2.FLOAT32)
        if shape:
            tensor_head += _length_delimited_header(2, len(shape)) + shape
        if len(data):  # proto3 leaves an empty bytes field out
            tensor_head += _length_delimited_header(3, len(data))
        tensor_len = len(tensor_head) + len(data)
        name_bytes = name.encode()
        named_head = (_length_delimited_header(1, len(name_bytes)) + name_bytes
                      + _length_delimited_header(2, tensor_len))
        named_len = len(named_head) + tensor_len
        parts += [_length_delimited_header(field, named_len), named_head, tensor_head, data]
    return b"".join(parts)
