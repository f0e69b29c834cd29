"""Hypothesis strategies for malformed tensors and requests, and the tally of inputs tried.

Each strategy starts from a well-formed value and breaks exactly one thing (a shape, a
dtype, a byte count, a value, a name, a version, the encoding itself), so a test can say
what the server must answer: which status code, and which variable or field the message
names.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ba3c import tensors
from ba3c.v1 import tensor_pb2

# How many malformed inputs each target got, for the summary (see conftest.py).
TRIED: collections.Counter[str] = collections.Counter()

FLOAT32 = tensor_pb2.FLOAT32
ITEM_SIZE = {
    tensor_pb2.FLOAT32: 4,
    tensor_pb2.BFLOAT16: 2,
    tensor_pb2.FLOAT16: 2,
    tensor_pb2.UINT8: 1,
    tensor_pb2.INT32: 4,
    tensor_pb2.INT64: 8,
}


@dataclass
class Broken:
    """A malformed list of named tensors and what is wrong with it."""

    tensors: list[tensor_pb2.NamedTensor]
    kind: str
    name: str | None  # the variable the error message must name, if one


def _tensor(dtype: int, shape, data: bytes) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=dtype, shape=list(shape), data=data)


shapes = st.lists(st.integers(0, 12), min_size=0, max_size=4).map(tuple)
huge_dims = st.lists(
    st.sampled_from([2**31, 2**40, 2**62, 10**6, 65536]), min_size=1, max_size=4
).map(tuple)
negative_dims = st.lists(st.integers(-(2**62), -1), min_size=1, max_size=3).map(tuple)
wrong_dtypes = st.sampled_from(
    [
        tensor_pb2.DTYPE_UNSPECIFIED,
        tensor_pb2.UINT8,
        tensor_pb2.INT32,
        tensor_pb2.INT64,
        7,
        99,
        2**31 - 1,
    ]
)
bad_floats = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def broken_named(draw, good: Mapping[str, np.ndarray], allow_dtypes=(FLOAT32,)) -> Broken:
    """`good` (float32 arrays by name) with exactly one thing wrong."""
    names = sorted(good)
    encoded = {n: tensors.encode(good[n]) for n in names}
    victim = draw(st.sampled_from(names))
    shape = tuple(good[victim].shape)
    kind = draw(
        st.sampled_from(
            [
                "shape",
                "dtype",
                "short data",
                "long data",
                "nonfinite",
                "unknown name",
                "missing",
                "duplicate",
                "huge shape",
                "negative dim",
                "no tensor",
            ]
        )
    )
    out = dict(encoded)
    extra: list[tensor_pb2.NamedTensor] = []
    name: str | None = victim
    if kind == "shape":
        new = draw(shapes.filter(lambda s: s != shape))
        size = int(np.prod(new, dtype=np.int64))
        out[victim] = _tensor(FLOAT32, new, b"\0" * (4 * size))
    elif kind == "dtype":
        dtype = draw(wrong_dtypes.filter(lambda d: d not in allow_dtypes))
        size = int(np.prod(shape, dtype=np.int64)) * ITEM_SIZE.get(dtype, 4)
        out[victim] = _tensor(dtype, shape, b"\1" * size)
    elif kind == "short data":
        data = encoded[victim].data
        cut = draw(st.integers(0, max(0, len(data) - 1)))
        out[victim] = _tensor(FLOAT32, shape, data[:cut])
    elif kind == "long data":
        junk = draw(st.binary(min_size=1, max_size=64))
        out[victim] = _tensor(FLOAT32, shape, encoded[victim].data + junk)
    elif kind == "nonfinite":
        if good[victim].size == 0:
            kind, out[victim] = "missing", None
        else:
            array = np.array(good[victim], dtype=np.float32, copy=True).reshape(-1)
            at = draw(st.lists(st.integers(0, array.size - 1), min_size=1, max_size=3))
            array[at] = draw(bad_floats)
            dtype = draw(st.sampled_from(list(allow_dtypes)))
            out[victim] = tensors.encode(array.reshape(shape), dtype)
    elif kind == "unknown name":
        new = draw(st.text(min_size=1, max_size=20).filter(lambda s: s not in good))
        extra.append(tensor_pb2.NamedTensor(name=new, tensor=encoded[victim]))
        name = None  # the text may not survive into a message verbatim (e.g. control chars)
    elif kind == "missing":
        out[victim] = None
    elif kind == "duplicate":
        extra.append(tensor_pb2.NamedTensor(name=victim, tensor=encoded[victim]))
    elif kind == "huge shape":
        out[victim] = _tensor(FLOAT32, draw(huge_dims), b"\0" * draw(st.integers(0, 16)))
    elif kind == "negative dim":
        out[victim] = _tensor(FLOAT32, draw(negative_dims), b"")
    elif kind == "no tensor":
        extra.append(tensor_pb2.NamedTensor(name=victim))
        out[victim] = None
    named = [tensor_pb2.NamedTensor(name=n, tensor=t) for n, t in out.items() if t is not None]
    named += extra
    order = draw(st.permutations(range(len(named))))
    return Broken([named[i] for i in order], kind, name)


@st.composite
def truncations(draw, encoded: bytes) -> bytes:
    """A strict, non-empty prefix of a serialised message that ends inside it."""
    return encoded[: draw(st.integers(1, len(encoded) - 1))]
