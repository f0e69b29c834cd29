"""Parameters on the wire, encoded once per version and reused for every caller.

`PushPullResponse` and `PullResponse` both carry the parameters in field 3
(`repeated NamedTensor parameters = 3`). Protocol buffers allow a message to be the
concatenation of its fields' encodings, so a reply is its few small fields
(`SerializeToString()` of a message without parameters) followed by the parameters
encoded by hand (`parameter_parts`: headers plus views of the numpy arrays), joined with
one copy of the parameter bytes. The shard builds each distinct reply once per version and
hands the same bytes to every caller that gets it (all members of a sync round, every
Pull). tests/paramserver checks that protobuf parses it back to the same arrays.

Requests go the other way: `parse_push_request` reads a PushPullRequest without copying
its gradient bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ba3c.v1 import paramserver_pb2 as pb
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


def parameter_parts(
    params: Mapping[str, np.ndarray], field: int = PARAMETERS_FIELD
) -> list[bytes | memoryview]:
    """The encoding of `repeated NamedTensor <field>` holding float32 `params`, as pieces to
    join: small headers and views of the arrays' memory (valid while the arrays are)."""
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
        named_head = (
            _length_delimited_header(1, len(name_bytes))
            + name_bytes
            + _length_delimited_header(2, tensor_len)
        )
        named_len = len(named_head) + tensor_len
        parts += [_length_delimited_header(field, named_len), named_head, tensor_head, data]
    return parts


def encode_parameters(params: Mapping[str, np.ndarray], field: int = PARAMETERS_FIELD) -> bytes:
    """The encoding of `repeated NamedTensor <field>` holding float32 `params`."""
    return b"".join(parameter_parts(params, field))


def push_reply(
    outcome: int,
    version: int,
    staleness: int,
    env_frames: int,
    parts: list[bytes | memoryview],
    repeated: bool = False,
) -> bytes:
    """A serialised PushPullResponse: its small fields, then the parameters (one copy)."""
    head = pb.PushPullResponse(
        outcome=outcome,
        version=version,
        staleness=staleness,
        env_frames=env_frames,
        repeated=repeated,
    ).SerializeToString()
    return b"".join([head, *parts])


def pull_reply(version: int, env_frames: int, parts: list[bytes | memoryview] | None) -> bytes:
    """A serialised PullResponse; `parts` None means the caller is up to date."""
    head = pb.PullResponse(
        version=version, unchanged=parts is None, env_frames=env_frames
    ).SerializeToString()
    return b"".join([head, *(parts or ())])


# ---------------------------------------------------------------------------------------
# PushPullRequest, parsed without copying the gradient bytes
#
# protobuf's Python parser copies every bytes field, once on parsing and again on each
# access of `.data`: three copies of a 6.7 MB push before numpy sees it. This parser walks
# the wire format and keeps each tensor's data as a memoryview into the request's bytes.


class WireError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


@dataclass
class RawTensor:
    """One NamedTensor of a request: header fields decoded, data still a byte view."""

    name: str = ""
    dtype: int = 0
    shape: list[int] = field(default_factory=list)
    data: memoryview = field(default_factory=lambda: memoryview(b""))


@dataclass
class PushRequest:
    """The fields of a PushPullRequest (see protos/ba3c/v1/paramserver.proto)."""

    client_id: str = ""
    version: int = 0
    gradients: list[RawTensor] = field(default_factory=list)
    env_frames: int = 0
    samples: int = 0
    session: str = ""  # idempotency key: (client_id, session, sequence)
    sequence: int = 0
    error: str = ""  # set instead of raising, so the servicer can answer
    size: int = 0  # bytes on the wire


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint too long")


def _signed64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: memoryview, pos: int, end: int):
    """Yields (field number, wire type, value) where value is an int or a memoryview."""
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos, end)
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end:
                raise WireError("length-delimited field runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if pos + width > end:
                raise WireError("fixed-width field runs past the end")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        yield number, wire_type, value


def _tensor(buf: memoryview, into: RawTensor) -> None:
    for number, wire_type, value in _fields(buf, 0, len(buf)):
        if number == 1 and wire_type == 0:
            into.dtype = int(value)
        elif number == 2 and wire_type == 2:  # packed shape
            pos = 0
            while pos < len(value):
                dim, pos = _read_varint(value, pos, len(value))
                into.shape.append(_signed64(dim))
        elif number == 2 and wire_type == 0:  # unpacked shape
            into.shape.append(_signed64(value))
        elif number == 3 and wire_type == 2:
            into.data = value


def _named_tensor(buf: memoryview) -> RawTensor:
    out = RawTensor()
    for number, wire_type, value in _fields(buf, 0, len(buf)):
        if number == 1 and wire_type == 2:
            out.name = bytes(value).decode("utf-8")
        elif number == 2 and wire_type == 2:
            _tensor(value, out)
    return out


def parse_push_request(data: bytes) -> PushRequest:
    """PushPullRequest bytes -> PushRequest; never raises (sets `error` instead)."""
    out = PushRequest(size=len(data))
    buf = memoryview(data)
    try:
        for number, wire_type, value in _fields(buf, 0, len(buf)):
            if number == 1 and wire_type == 2:
                out.client_id = bytes(value).decode("utf-8")
            elif number == 2 and wire_type == 0:
                out.version = _signed64(value)
            elif number == 3 and wire_type == 2:
                out.gradients.append(_named_tensor(value))
            elif number == 4 and wire_type == 0:
                out.env_frames = _signed64(value)
            elif number == 5 and wire_type == 0:
                out.samples = _signed64(value)
            elif number == 6 and wire_type == 2:
                out.session = bytes(value).decode("utf-8")
            elif number == 7 and wire_type == 0:
                out.sequence = value & ((1 << 64) - 1)  # uint64
    except (WireError, UnicodeDecodeError) as e:
        out.error = f"malformed PushPullRequest: {e}"
    return out
