"""numpy arrays <-> `ba3c.v1.Tensor`: raw little-endian bytes plus dtype and shape.

Decoding is zero-copy for dtypes numpy has (the array is a read-only view of the message's
bytes); bfloat16 is widened to float32 on decode, since numpy has no bfloat16. Anything
inconsistent (unknown dtype, negative dimension, byte count that does not match the shape)
raises `TensorError` with a message that says what is wrong, so servers can return it as
INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

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


def to_bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(array, dtype="<f4").view("<u4")
    rounding = ((bits >> 16) & 1) + 0x7FFF
    out = ((bits + rounding) >> 16).astype("<u2")
    nan = np.isnan(array)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype("<u4") << 16).view("<f4")


def encode(array: np.ndarray, dtype: int | str | None = None) -> pb.Tensor:
    """numpy array -> Tensor. `dtype` converts first (e.g. float32 gradients -> bfloat16)."""
    array = np.asarray(array)
    if isinstance(dtype, str):
        dtype = dtype_from_name(dtype)
    if dtype is None:
        try:
            dtype = _FROM_NUMPY[array.dtype]
        except KeyError:
            raise TensorError(f"no wire dtype for numpy {array.dtype}; convert first") from None
    if dtype == pb.BFLOAT16:
        data = to_bfloat16_bits(array.astype(np.float32, copy=False)).tobytes()
    elif dtype in _WIRE:
        data = np.ascontiguousarray(array, dtype=_WIRE[dtype]).tobytes()
    else:
        raise TensorError(f"cannot encode to dtype {dtype_name(dtype)}")
    return pb.Tensor(dtype=dtype, shape=array.shape, data=data)


def check(tensor: pb.Tensor) -> tuple[np.dtype, tuple[int, ...]]:
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


def decode(tensor: pb.Tensor) -> np.ndarray:
    """Tensor -> numpy array (read-only view of the bytes; bfloat16 becomes float32)."""
    wire, shape = check(tensor)
    array = np.frombuffer(tensor.data, dtype=wire).reshape(shape)
    if tensor.dtype == pb.BFLOAT16:
        return from_bfloat16_bits(array)
    return array


def encode_named(arrays: Mapping[str, np.ndarray], dtype: int | str | None = None):
    """{name: array} -> list of NamedTensor (in the mapping's order)."""
    return [pb.NamedTensor(name=name, tensor=encode(a, dtype)) for name, a in arrays.items()]


def decode_named(named: Iterable[pb.NamedTensor]) -> dict[str, np.ndarray]:
    """NamedTensors -> {name: array}; a repeated name is an error."""
    out: dict[str, np.ndarray] = {}
    for item in named:
        if item.name in out:
            raise TensorError(f"variable {item.name!r} appears twice")
        try:
            out[item.name] = decode(item.tensor)
        except TensorError as e:
            raise TensorError(f"variable {item.name!r}: {e}") from None
    return out
