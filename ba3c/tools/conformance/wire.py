"""The kit's own tensor encoding (tensor.proto), written from the contract rather than
taken from the services, so that it checks them instead of agreeing with them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ba3c.v1 import tensor_pb2

NUMPY = {
    tensor_pb2.FLOAT32: np.dtype("<f4"),
    tensor_pb2.FLOAT16: np.dtype("<f2"),
    tensor_pb2.UINT8: np.dtype("u1"),
    tensor_pb2.INT32: np.dtype("<i4"),
    tensor_pb2.INT64: np.dtype("<i8"),
}

WIRE_DTYPES = {np.dtype(np.uint8): tensor_pb2.UINT8, np.dtype(np.float32): tensor_pb2.FLOAT32}


def bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest even (finite values only)."""
    array = np.asarray(array, "<f4")
    bits = np.ascontiguousarray(array).view("<u4").astype(np.uint64).reshape(array.shape)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype("<u4") << 16).view("<f4")


def tensor(array: np.ndarray, dtype: int = tensor_pb2.FLOAT32) -> tensor_pb2.Tensor:
    array = np.asarray(array)
    if dtype == tensor_pb2.BFLOAT16:
        data = bfloat16_bits(array).tobytes()
    else:
        data = np.ascontiguousarray(array, NUMPY[dtype]).tobytes()
    return tensor_pb2.Tensor(dtype=dtype, shape=list(array.shape), data=data)


def named(arrays: Mapping[str, np.ndarray], dtype: int = tensor_pb2.FLOAT32):
    return [tensor_pb2.NamedTensor(name=n, tensor=tensor(a, dtype)) for n, a in arrays.items()]


def as_sent(array: np.ndarray, dtype: int) -> np.ndarray:
    """The float32 values a receiver gets from `array` sent as `dtype`."""
    if dtype == tensor_pb2.BFLOAT16:
        return widen_bfloat16(bfloat16_bits(array))
    return np.asarray(array).astype(NUMPY[dtype]).astype(np.float32)


def decode(t: tensor_pb2.Tensor) -> np.ndarray:
    """Tensor -> array; raises ValueError if the header and the bytes disagree."""
    if t.dtype == tensor_pb2.BFLOAT16:
        wire = np.dtype("<u2")
    elif t.dtype in NUMPY:
        wire = NUMPY[t.dtype]
    else:
        raise ValueError(f"dtype {t.dtype} is not a valid DType")
    shape = tuple(int(d) for d in t.shape)
    if any(d < 0 for d in shape) or len(t.data) != int(np.prod(shape)) * wire.itemsize:
        raise ValueError(f"{len(t.data)} bytes do not fit shape {list(shape)}")
    array = np.frombuffer(t.data, wire).reshape(shape)
    return widen_bfloat16(array) if t.dtype == tensor_pb2.BFLOAT16 else array


def decode_named(items) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for item in items:
        if item.name in out:
            raise ValueError(f"{item.name!r} appears twice")
        out[item.name] = decode(item.tensor)
    return out
