"""The tensor codec: every dtype round-trips; inconsistent messages are refused clearly."""

import numpy as np
import pytest

from ba3c import tensors
from ba3c.tensors import TensorError
from ba3c.v1 import learner_pb2 as psl
from ba3c.v1 import paramserver_pb2 as psp
from ba3c.v1 import tensor_pb2 as pb


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8", "int32", "int64"])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3, 4), (1, 84, 84, 4)])
def test_round_trip_is_exact_for_numpy_dtypes(dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    message = tensors.encode(array)
    back = tensors.decode(pb.Tensor.FromString(message.SerializeToString()))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_decode_is_zero_copy_and_read_only():
    message = tensors.encode(np.arange(10, dtype=np.float32))
    view = tensors.decode(message)
    assert not view.flags.writeable
    assert not view.flags.owndata


def test_bfloat16_round_trip_keeps_three_significant_digits():
    array = np.array([1.0, -2.5, 3.14159, 1e-20, 6.5e4, 0.0, np.inf, -np.inf], np.float32)
    message = tensors.encode(array, "bfloat16")
    assert message.dtype == pb.BFLOAT16 and len(message.data) == 2 * array.size
    back = tensors.decode(message)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, array, rtol=2**-8)


def test_bfloat16_rounds_to_nearest_even_and_keeps_nan():
    # 1 + 2^-8 is exactly between two bfloat16 values: ties go to the even one (1.0)
    halfway = np.array([1 + 2**-8, 1 + 3 * 2**-8, np.nan], np.float32)
    back = tensors.decode(tensors.encode(halfway, "bfloat16"))
    assert back[0] == 1.0 and back[1] == 1 + 2**-6 and np.isnan(back[2])


def test_bfloat16_rounding_matches_an_independent_implementation():
    # ml_dtypes (TensorFlow's bfloat16 type) as the reference: random values over the whole
    # float32 range, ties, the largest finite float (rounds up to inf), subnormals, zeros
    import ml_dtypes

    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    edges = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.4028235e38, 1e-40, -1e-45, 0.0, -0.0]
    array = np.concatenate([bits.view(np.float32), np.array(edges, np.float32)])
    array = array[~np.isnan(array)]  # NaN: only "stays NaN" is promised (test above)
    ours = tensors.to_bfloat16_bits(array)
    np.testing.assert_array_equal(ours, array.astype(ml_dtypes.bfloat16).view(np.uint16))


def test_bfloat16_rounding_writes_into_unaligned_packed_slots():
    # a Packer's slots start wherever their headers end, at odd byte offsets
    shapes = {"a": (3,), "b": (2, 5)}
    rng = np.random.default_rng(4)
    arrays = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    data = tensors.Packer(shapes, "bfloat16").serialize(psp.PushPullRequest(), arrays)
    _, raw = tensors.parse(data, psp.PushPullRequest)
    back = tensors.decode_named(raw)
    for name, array in arrays.items():
        np.testing.assert_array_equal(
            back[name], tensors.from_bfloat16_bits(tensors.to_bfloat16_bits(array))
        )
        np.testing.assert_allclose(back[name], array, rtol=2**-8)


def test_bfloat16_rounding_refuses_an_out_array_it_cannot_fill_exactly():
    array = np.ones((2, 3), np.float32)
    for out in (np.zeros(5, np.uint16), np.zeros((3, 2), np.uint16).T, np.zeros((2, 3), np.int32)):
        before = out.copy()
        with pytest.raises(TensorError, match="out must be C-contiguous uint16"):
            tensors.to_bfloat16_bits(array, out=out)
        np.testing.assert_array_equal(out, before)


def test_bytes_are_little_endian_c_order():
    message = tensors.encode(np.array([[1, 2], [3, 4]], np.int32))
    assert message.data == b"".join(i.to_bytes(4, "little") for i in (1, 2, 3, 4))
    assert list(message.shape) == [2, 2]


@pytest.mark.parametrize(
    "message, words",
    [
        (pb.Tensor(dtype=pb.FLOAT32, shape=[3], data=b"\0" * 8), "needs 12 bytes, got 8"),
        (pb.Tensor(dtype=pb.FLOAT32, shape=[-1], data=b""), "negative dimension"),
        (pb.Tensor(dtype=pb.DTYPE_UNSPECIFIED, shape=[1], data=b"\0"), "unsupported dtype"),
        (pb.Tensor(dtype=77, shape=[1], data=b"\0"), "unsupported dtype"),
        (pb.Tensor(dtype=pb.UINT8, shape=[1 << 30, 1 << 30], data=b"\0"), "more than"),
        (pb.Tensor(dtype=pb.INT64, shape=[2, 2], data=b"\0" * 31), "needs 32 bytes"),
    ],
)
def test_inconsistent_tensors_are_refused_with_a_reason(message, words):
    with pytest.raises(TensorError, match=words):
        tensors.decode(message)


def test_encode_refuses_dtypes_without_a_wire_form():
    with pytest.raises(TensorError, match="no wire dtype"):
        tensors.encode(np.zeros(3, np.complex64))
    with pytest.raises(TensorError, match="unknown dtype"):
        tensors.encode(np.zeros(3), "float128")


def test_named_decode_names_the_variable_and_refuses_duplicates():
    good = tensors.encode_named({"a": np.zeros(2, np.float32)})
    bad = [pb.NamedTensor(name="conv/kernel", tensor=pb.Tensor(dtype=pb.FLOAT32, shape=[2]))]
    with pytest.raises(TensorError, match="'conv/kernel'.*needs 8 bytes"):
        tensors.decode_named(bad)
    with pytest.raises(TensorError, match="appears twice"):
        tensors.decode_named(good + good)


# -- the byte level: serialising without protobuf's copies, parsing into views ----------

SHAPES = {"conv/kernel": (3, 3, 2, 4), "bias": (4,), "scalar": (), "empty": (0, 3)}


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_packer_writes_the_bytes_protobuf_would(dtype):
    packer = tensors.Packer(SHAPES, dtype)
    for seed in (0, 1):  # the second pack overwrites the first in the same buffer
        values = arrays(seed)
        head = psp.PushPullRequest(client_id="learner-3", version=17, env_frames=1 << 33)
        expected = psp.PushPullRequest(
            client_id="learner-3",
            version=17,
            env_frames=1 << 33,
            gradients=tensors.encode_named(values, dtype),
        )
        data = packer.serialize(head, values)
        # the same message (not the same bytes: protobuf orders fields by number)
        assert psp.PushPullRequest.FromString(data) == expected


def test_packer_refuses_other_variables_and_shapes():
    packer = tensors.Packer(SHAPES)
    with pytest.raises(TensorError, match="Packer holds"):
        packer.pack({"bias": np.zeros(4, np.float32)})
    wrong = {**arrays(), "bias": np.zeros(5, np.float32)}
    with pytest.raises(TensorError, match="'bias': shape \\[5\\]"):
        packer.pack(wrong)


def test_parse_keeps_the_small_fields_and_views_the_tensors():
    values = arrays()
    head = psp.PushPullResponse(outcome=psp.APPLIED, version=300, staleness=2, env_frames=9)
    data = tensors.serialize(head, tensors.named_tensors_field(3, values))
    assert psp.PushPullResponse.FromString(data) == psp.PushPullResponse(
        outcome=psp.APPLIED,
        version=300,
        staleness=2,
        env_frames=9,
        parameters=tensors.encode_named(values),
    )
    message, raw = tensors.parse(data, psp.PushPullResponse)
    assert message == head
    back = tensors.decode_named(raw)
    assert list(back) == list(values)
    for name, array in values.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].shape == array.shape
    fc = back["conv/kernel"]
    assert not fc.flags.writeable and not fc.flags.owndata
    # a view of `data` itself: its address lies inside the received bytes
    start = np.frombuffer(data, np.uint8).ctypes.data
    assert start <= fc.ctypes.data < start + len(data)


def test_parse_leaves_bfloat16_bits_unwidened_on_request():
    data = tensors.serialize(
        psp.PushPullRequest(), tensors.named_tensors_field(3, arrays(), "bfloat16")
    )
    _, raw = tensors.parse(data, psp.PushPullRequest)
    bits = tensors.decode_named(raw, widen_bfloat16=False)["bias"]
    assert bits.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(
        tensors.from_bfloat16_bits(bits), tensors.decode_named(raw)["bias"]
    )


def test_a_single_tensor_field_round_trips():
    frames = np.arange(2 * 5 * 5 * 3, dtype=np.uint8).reshape(2, 5, 5, 3)
    data = tensors.serialize(
        psl.ActRequest(pool_id="p"), tensors.tensor_field(3, frames.transpose(0, 3, 1, 2))
    )
    message, (raw,) = tensors.parse(data, psl.ActRequest, named=False)
    assert message.pool_id == "p"
    np.testing.assert_array_equal(tensors.decode(raw), frames.transpose(0, 3, 1, 2))


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x1a\x10abc", "runs past the end"),
        (b"\x10\xff\xff", "truncated varint"),
        (b"\x0b\x00", "unsupported wire type 3"),
        (b"\x0a\x02\xff\xfe", "malformed PushPullRequest"),  # client_id not UTF-8
    ],
)
def test_parse_refuses_malformed_bytes_with_a_reason(data, words):
    with pytest.raises(tensors.WireError, match=words):
        tensors.parse(data, psp.PushPullRequest)


@pytest.mark.parametrize("value", [1, 127, 128, 300, (1 << 63) - 1, -1, -(1 << 63)])
def test_varints_are_written_as_protobuf_writes_them(value):
    # field 2 (version, int64): one key byte, then the varint
    assert tensors.varint(value) == psp.PushPullRequest(version=value).SerializeToString()[1:]
    assert tensors.varint(0) == b"\x00"
