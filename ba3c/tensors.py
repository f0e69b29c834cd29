"""numpy arrays <-> `ba3c.v1.Tensor`: raw little-endian bytes plus dtype and shape.

The one codec every service uses. Decoding is zero-copy for dtypes numpy has (the array
is a read-only view of the message's bytes); bfloat16 is widened to float32 on decode,
since numpy has no bfloat16, unless the caller asks for the raw bits (the paramserver's
compiled update reads them directly). Anything inconsistent (unknown dtype, negative
dimension, byte count that does not match the shape) raises `TensorError` with a message
that says what is wrong, so servers can return it as INVALID_ARGUMENT.

Two levels:
- protobuf messages: `encode`/`decode` (one `Tensor`), `encode_named`/`decode_named`;
- bytes, without protobuf's copies of big tensors: `tensor_field`/`named_tensors_field`
  and `serialize` (a message's small fields by protobuf, its tensors as views, joined with
  one copy), `Packer` (a preallocated buffer that arrays are written straight into, for a
  learner's gradients), and `parse` (a message's small fields by protobuf, its tensors as
  `RawTensor`s whose data are views of the received bytes; `decode`/`decode_named` turn
  them into arrays with `np.frombuffer`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError

from ba3c.v1 import tensor_pb2 as pb

DType = pb.DType

# dtype enum -> numpy dtype of the bytes on the wire (little-endian).
_WIRE: dict[int, np.dtype] = {
    pb.FLOAT32: np.dtype("<f4"),
    pb.BFLOAT16: np.dtype("<u2"),  # upper half of a float32, decoded to float32
    pb.FLOAT16: np.dtype("<f2"),
    pb.UINT8: np.dtype("u1"),
    pb.INT32: np.dtype("<i4"),
    pb.INT64: np.dtype("<i8"),
}
_FROM_NUMPY: dict[np.dtype, int] = {
    np.dtype("float32"): pb.FLOAT32,
    np.dtype("float16"): pb.FLOAT16,
    np.dtype("uint8"): pb.UINT8,
    np.dtype("int32"): pb.INT32,
    np.dtype("int64"): pb.INT64,
}
_BY_NAME = {
    "float32": pb.FLOAT32,
    "bfloat16": pb.BFLOAT16,
    "float16": pb.FLOAT16,
    "uint8": pb.UINT8,
    "int32": pb.INT32,
    "int64": pb.INT64,
}

# No tensor may declare more elements than this (2**34 float32 = 64 GiB): a guard
# against huge declared shapes overflowing the size arithmetic.
MAX_ELEMENTS = 1 << 34


class TensorError(ValueError):
    """A Tensor message that cannot be decoded or encoded; the message says why."""


def dtype_from_name(name: str) -> int:
    """'float32' | 'bfloat16' | ... -> DType enum value."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TensorError(f"unknown dtype {name!r}; use one of {', '.join(_BY_NAME)}") from None


def dtype_name(dtype: int) -> str:
    for name, value in _BY_NAME.items():
        if value == dtype:
            return name
    return f"DType({dtype})"


def to_bfloat16_bits(array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; NaN stays NaN.
    Written into `out` (uint16, same shape, C-contiguous) if given. One compiled pass
    (`ba3c.compiled`, loaded on first use)."""
    array = np.asarray(array, dtype="<f4", order="C")
    if out is None:
        out = np.empty(array.shape, "<u2")
    elif out.shape != array.shape or out.dtype != np.dtype("<u2") or not out.flags.c_contiguous:
        # the compiled pass writes by index: a wrong `out` must not be written at all
        raise TensorError(
            f"out must be C-contiguous uint16 of shape {list(array.shape)}, got "
            f"{out.dtype} {list(out.shape)}"
        )
    _bfloat16_rounding()(array.reshape(-1).view("<u4"), out.reshape(-1))
    return out


def _bfloat16_rounding():
    """The compiled rounding pass; importing it loads numba, which only the processes that
    round to bfloat16 need (not the pools)."""
    from ba3c.compiled import round_to_bfloat16

    return round_to_bfloat16


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns -> float32, in one pass (a float32 is the bits << 16)."""
    return np.left_shift(bits, np.uint32(16), out=np.empty(bits.shape, "<u4")).view("<f4")


def encode(array: np.ndarray, dtype: int | str | None = None) -> pb.Tensor:
    """numpy array -> Tensor. `dtype` converts first (e.g. float32 gradients -> bfloat16)."""
    dtype, wire = _wire_array(array, dtype)
    return pb.Tensor(dtype=dtype, shape=wire.shape, data=wire.tobytes())


def check(tensor: pb.Tensor | RawTensor) -> tuple[np.dtype, tuple[int, ...]]:
    """Validates a Tensor's header against its payload; returns (wire dtype, shape)."""
    if tensor.dtype not in _WIRE:
        raise TensorError(f"unsupported dtype {dtype_name(tensor.dtype)}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"negative dimension in shape {list(shape)}")
    count = 1
    for d in shape:
        count *= d
        if count > MAX_ELEMENTS:
            raise TensorError(f"shape {list(shape)} declares more than {MAX_ELEMENTS} elements")
    wire = _WIRE[tensor.dtype]
    expected = count * wire.itemsize
    if len(tensor.data) != expected:
        raise TensorError(
            f"shape {list(shape)} of {dtype_name(tensor.dtype)} needs {expected} bytes, "
            f"got {len(tensor.data)}"
        )
    return wire, shape


def decode(tensor: pb.Tensor | RawTensor, widen_bfloat16: bool = True) -> np.ndarray:
    """Tensor -> numpy array (read-only view of the bytes; bfloat16 becomes float32, or
    stays uint16 bit patterns with `widen_bfloat16=False`)."""
    wire, shape = check(tensor)
    array = np.frombuffer(tensor.data, dtype=wire).reshape(shape)
    if tensor.dtype == pb.BFLOAT16 and widen_bfloat16:
        return from_bfloat16_bits(array)
    return array


def encode_named(
    arrays: Mapping[str, np.ndarray], dtype: int | str | None = None
) -> list[pb.NamedTensor]:
    """{name: array} -> list of NamedTensor (in the mapping's order)."""
    return [pb.NamedTensor(name=name, tensor=encode(a, dtype)) for name, a in arrays.items()]


def decode_named(
    named: Iterable[pb.NamedTensor | RawTensor], widen_bfloat16: bool = True
) -> dict[str, np.ndarray]:
    """NamedTensors (or RawTensors from `parse`) -> {name: array}; a repeated name is an
    error. Arrays are views of the message's bytes, as `decode` makes them."""
    out: dict[str, np.ndarray] = {}
    for item in named:
        if item.name in out:
            raise TensorError(f"variable {item.name!r} appears twice")
        tensor = item if isinstance(item, RawTensor) else item.tensor
        try:
            out[item.name] = decode(tensor, widen_bfloat16)
        except TensorError as e:
            raise TensorError(f"variable {item.name!r}: {e}") from None
    return out


# ---------------------------------------------------------------------------------------
# The protobuf wire format, by hand, where protobuf would copy the tensors' bytes.
#
# protobuf's Python messages copy every bytes field: into the message when built, out of it
# on `.data`, and again on SerializeToString / FromString. A message is the concatenation of
# its fields' encodings (in any order), so a message with big tensors is serialised as
# protobuf's encoding of its small fields followed by the tensor fields written here (the
# array bytes copied once, into the result), and parsed by walking the top-level fields:
# the small ones go to protobuf, each tensor keeps its data as a view of the received bytes.
# tests/test_tensors.py checks both against protobuf's own encoding.

Part = bytes | memoryview


class WireError(TensorError):
    """Bytes that are not a valid encoding of the expected message."""


def varint(value: int) -> bytes:
    """`value` as a protobuf base-128 varint (a negative one as its 64-bit two's
    complement, ten bytes, as protobuf writes an int64)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def field_header(field: int, length: int) -> bytes:
    """Key and length of a length-delimited field (wire type 2)."""
    return varint(field << 3 | 2) + varint(length)


def _wire_array(array: np.ndarray, dtype: int | str | None) -> tuple[int, np.ndarray]:
    """(dtype enum, C-contiguous array of the wire bytes' type) of `array`."""
    array = np.asarray(array)
    if isinstance(dtype, str):
        dtype = dtype_from_name(dtype)
    if dtype is None:
        try:
            dtype = _FROM_NUMPY[array.dtype]
        except KeyError:
            raise TensorError(f"no wire dtype for numpy {array.dtype}; convert first") from None
    if dtype == pb.BFLOAT16:
        return dtype, to_bfloat16_bits(array.astype(np.float32, copy=False))
    if dtype not in _WIRE:
        raise TensorError(f"cannot encode to dtype {dtype_name(dtype)}")
    return dtype, np.asarray(array, dtype=_WIRE[dtype], order="C")


def _tensor_head(dtype: int, shape: tuple[int, ...], nbytes: int) -> bytes:
    """The Tensor message's encoding up to (and including) its data field's header."""
    head = varint(1 << 3) + varint(dtype)
    if shape:
        dims = b"".join(varint(int(d)) for d in shape)
        head += field_header(2, len(dims)) + dims
    if nbytes:  # proto3 leaves an empty bytes field out
        head += field_header(3, nbytes)
    return head


def _named_head(name: str, tensor_size: int) -> bytes:
    encoded = name.encode()
    return field_header(1, len(encoded)) + encoded + field_header(2, tensor_size)


def tensor_field(field: int, array: np.ndarray, dtype: int | str | None = None) -> list[Part]:
    """`Tensor <field> = array` as pieces to join: headers and a view of the bytes."""
    dtype, wire = _wire_array(array, dtype)
    data = memoryview(wire.reshape(-1).view(np.uint8))
    head = _tensor_head(dtype, wire.shape, data.nbytes)
    return [field_header(field, len(head) + data.nbytes), head, data]


def named_tensors_field(
    field: int, arrays: Mapping[str, np.ndarray], dtype: int | str | None = None
) -> list[Part]:
    """`repeated NamedTensor <field>` holding `arrays` (in order) as pieces to join: small
    headers and views of the arrays' memory (valid while the arrays are)."""
    parts: list[Part] = []
    for name, array in arrays.items():
        code, wire = _wire_array(array, dtype)
        data = memoryview(wire.reshape(-1).view(np.uint8))
        tensor_head = _tensor_head(code, wire.shape, data.nbytes)
        named_head = _named_head(name, len(tensor_head) + data.nbytes)
        size = len(named_head) + len(tensor_head) + data.nbytes
        parts += [field_header(field, size), named_head, tensor_head, data]
    return parts


def serialize(message, parts: Iterable[Part] = ()) -> bytes:
    """`message` (a protobuf message without its tensors) serialised, followed by `parts`:
    the bytes of the whole message, with one copy of the tensors' bytes."""
    return b"".join([message.SerializeToString(), *parts])


class Packer:
    """One preallocated buffer holding `repeated NamedTensor <field>` for fixed names,
    shapes and wire dtype: `pack` writes each array's bytes straight into its place (the
    bfloat16 rounding writes there too), then `serialize(message)` is the message's few
    small fields followed by the buffer. For a learner's gradients, every push.

    Not thread-safe: one Packer per concurrent caller (e.g. per shard)."""

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        dtype: int | str = "float32",
        field: int = 3,
    ):
        self.dtype = dtype_from_name(dtype) if isinstance(dtype, str) else dtype
        if self.dtype not in (pb.FLOAT32, pb.BFLOAT16, pb.FLOAT16):
            raise TensorError(f"Packer writes float tensors, not {dtype_name(self.dtype)}")
        wire = _WIRE[self.dtype]
        layout, pos, heads = [], 0, []
        for name, shape in shapes.items():
            shape = tuple(int(d) for d in shape)
            nbytes = int(np.prod(shape, dtype=np.int64)) * wire.itemsize
            tensor_head = _tensor_head(self.dtype, shape, nbytes)
            named_head = _named_head(name, len(tensor_head) + nbytes)
            head = field_header(field, len(named_head) + len(tensor_head) + nbytes)
            head += named_head + tensor_head
            heads.append((pos, head))
            pos += len(head)
            layout.append((name, shape, pos, nbytes))
            pos += nbytes
        self._buffer = np.empty(pos, np.uint8)
        if self.dtype == pb.BFLOAT16:
            _bfloat16_rounding()  # loaded now rather than during the first push
        for start, head in heads:
            self._buffer[start : start + len(head)] = np.frombuffer(head, np.uint8)
        self._slots = {
            name: self._buffer[start : start + nbytes].view(wire).reshape(shape)
            for name, shape, start, nbytes in layout
        }

    @property
    def nbytes(self) -> int:
        return self._buffer.nbytes

    def pack(self, arrays: Mapping[str, np.ndarray]) -> memoryview:
        """Writes every array into the buffer; returns a view of the encoded field."""
        if arrays.keys() != self._slots.keys():
            raise TensorError(
                f"Packer holds {sorted(self._slots)}, got arrays for {sorted(arrays)}"
            )
        for name, slot in self._slots.items():
            array = np.asarray(arrays[name])
            if array.shape != slot.shape:
                raise TensorError(
                    f"variable {name!r}: shape {list(array.shape)}, the Packer holds "
                    f"{list(slot.shape)}"
                )
            if self.dtype == pb.BFLOAT16:
                to_bfloat16_bits(array, out=slot)
            else:
                np.copyto(slot, array, casting="same_kind")
        return memoryview(self._buffer)

    def serialize(self, message, arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
        """`message`'s small fields followed by the packed tensors (packing `arrays` first
        if given): the request bytes, with the tensors copied once."""
        data = self.pack(arrays) if arrays is not None else memoryview(self._buffer)
        return b"".join((message.SerializeToString(), data))


@dataclass
class RawTensor:
    """A NamedTensor (or Tensor) as parsed off the wire: header fields decoded, data still
    a view of the received bytes. `check` and `decode` accept it like a pb.Tensor."""

    name: str = ""
    dtype: int = 0
    shape: list[int] = field(default_factory=list)
    data: memoryview = field(default_factory=lambda: memoryview(b""))


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
    """Yields (field number, wire type, value, start of the field) where value is an int
    or a memoryview."""
    while pos < end:
        start = pos
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
        yield number, wire_type, value, start, pos


def _tensor(buf: memoryview, into: RawTensor) -> RawTensor:
    for number, wire_type, value, _, _ in _fields(buf, 0, len(buf)):
        if number == 1 and wire_type == 0:
            into.dtype = _signed64(value)
        elif number == 2 and wire_type == 2:  # packed shape
            pos = 0
            while pos < len(value):
                dim, pos = _read_varint(value, pos, len(value))
                into.shape.append(_signed64(dim))
        elif number == 2 and wire_type == 0:  # unpacked shape
            into.shape.append(_signed64(value))
        elif number == 3 and wire_type == 2:
            into.data = value
    return into


def _named_tensor(buf: memoryview) -> RawTensor:
    out = RawTensor()
    for number, wire_type, value, _, _ in _fields(buf, 0, len(buf)):
        if number == 1 and wire_type == 2:
            out.name = bytes(value).decode("utf-8")
        elif number == 2 and wire_type == 2:
            _tensor(value, out)
    return out


def parse(data: bytes, message_type, field: int = 3, named: bool = True):
    """Bytes of a `message_type` whose field `field` holds tensors -> (the message parsed by
    protobuf without that field, [RawTensor, ...] in wire order, data as views of `data`).
    `named`: the field is `repeated NamedTensor` (else a single `Tensor`). Raises WireError
    (a TensorError) if the bytes are not such a message."""
    buf = memoryview(data).cast("B")
    rest: list[memoryview] = []
    raw: list[RawTensor] = []
    try:
        for number, wire_type, value, start, end in _fields(buf, 0, len(buf)):
            if number == field and wire_type == 2:
                raw.append(_named_tensor(value) if named else _tensor(value, RawTensor()))
            else:
                rest.append(buf[start:end])
        message = message_type.FromString(b"".join(rest))
    except (UnicodeDecodeError, DecodeError) as e:
        raise WireError(f"malformed {message_type.DESCRIPTOR.name}: {e}") from None
    except WireError as e:
        raise WireError(f"malformed {message_type.DESCRIPTOR.name}: {e}") from None
    return message, raw
