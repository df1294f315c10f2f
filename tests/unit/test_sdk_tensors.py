"""The SDK's numpy <-> Tensor codec and request building, without a server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inferd.predictions import build_predict_request, build_stream_request, get_parameters
from inferd.tensors import DTYPE_NAMES, NUMPY_DTYPES, TensorError, fill_tensor, from_numpy, to_numpy
from inferd.v1 import inference_pb2, tensor_pb2


def sample(dtype_name: str, rows: int = 3) -> np.ndarray:
    """A (rows, 2) array of the type, including its extreme values where it has them."""
    if dtype_name == "BYTES":
        items = [b"", b"a", "\u00e9t\u00e9".encode(), b"\x00\xff" * 3, b"x" * 300, b"z"]
        array = np.empty(rows * 2, dtype=object)
        array[:] = (items * rows)[: rows * 2]
        return array.reshape(rows, 2)
    dtype = NUMPY_DTYPES[dtype_name]
    values: list[Any]
    if dtype_name == "BOOL":
        values = [True, False, True, True, False, False]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [info.min, info.max, 0, 1, info.max // 3, info.min // 2 if info.min else 7]
    else:
        values = [0.5, -1.25, 0.0, 1024.0, -3.0, 7.75]
    return np.array((values * rows)[: rows * 2], dtype=dtype).reshape(rows, 2)


ALL_TYPES = [name for name in NUMPY_DTYPES]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("rows", [3, 0])
@pytest.mark.parametrize("dtype_name", ALL_TYPES)
def test_round_trip_every_dtype(dtype_name: str, rows: int, raw: bool) -> None:
    array = sample(dtype_name, rows)
    tensor = from_numpy("t", array, raw=raw)
    assert DTYPE_NAMES[tensor.data_type] == dtype_name
    assert list(tensor.shape) == [rows, 2]
    # Exactly one carrier: raw bytes, or the typed field the proto assigns (when there is data).
    typed_fields = [f.name for f, _ in tensor.ListFields() if f.name.endswith("_contents")]
    if rows and raw:
        assert typed_fields == ["raw_contents"]
    elif rows:
        assert len(typed_fields) == 1 and typed_fields[0] != "raw_contents"

    # Through the wire format too, as a real call would.
    decoded = to_numpy(tensor_pb2.Tensor.FromString(tensor.SerializeToString()))
    assert decoded.shape == (rows, 2)
    if dtype_name == "BYTES":
        assert decoded.dtype == object
        assert decoded.tolist() == array.tolist()
    else:
        assert decoded.dtype == NUMPY_DTYPES[dtype_name]
        np.testing.assert_array_equal(decoded, array)


def test_strings_encode_as_utf8_bytes() -> None:
    decoded = to_numpy(from_numpy("s", np.array([["h\u00e9", "x"]])))
    assert decoded.tolist() == [["h\u00e9".encode(), b"x"]]


def test_big_endian_input_is_sent_little_endian() -> None:
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    tensor = from_numpy("b", big)
    assert tensor.raw_contents == np.arange(6, dtype="<i4").tobytes()
    decoded = to_numpy(tensor)
    assert decoded.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(decoded, big)

    big_float = np.array([1.5, -2.0], dtype=">f8")
    assert from_numpy("f", big_float).raw_contents == np.array([1.5, -2.0], dtype="<f8").tobytes()


def test_non_contiguous_input_is_sent_in_row_major_order() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = base.T[::2]  # strided and transposed
    decoded = to_numpy(from_numpy("v", view))
    np.testing.assert_array_equal(decoded, view)


def test_raw_decode_is_a_read_only_view_without_a_copy() -> None:
    tensor = from_numpy("x", np.arange(1000, dtype=np.float32).reshape(10, 100))
    decoded = to_numpy(tensor)
    assert not decoded.flags.writeable
    assert not decoded.flags.owndata
    owner = decoded
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    assert isinstance(owner.base, bytes)
    assert np.shares_memory(decoded, np.frombuffer(owner.base, dtype=np.uint8))
    with pytest.raises(ValueError):
        decoded[0, 0] = 1.0


def test_raw_length_mismatch_names_the_tensor() -> None:
    tensor = tensor_pb2.Tensor(
        name="pixels", data_type=tensor_pb2.DATA_TYPE_FP32, shape=[2, 2], raw_contents=b"\x00" * 15
    )
    with pytest.raises(TensorError, match=r"tensor 'pixels'.*15 bytes.*needs 16") as info:
        to_numpy(tensor)
    assert info.value.tensor_name == "pixels"


def test_bytes_raw_layout_errors_name_the_tensor() -> None:
    tensor = from_numpy("words", np.array([b"ab", b"cd"], dtype=object))
    tensor.raw_contents = tensor.raw_contents[:-1]
    with pytest.raises(TensorError, match="tensor 'words'"):
        to_numpy(tensor)


def test_raw_and_typed_together_is_refused() -> None:
    tensor = tensor_pb2.Tensor(
        name="both",
        data_type=tensor_pb2.DATA_TYPE_FP32,
        shape=[1],
        raw_contents=b"\x00" * 4,
        fp32_contents=[1.0],
    )
    with pytest.raises(TensorError, match=r"tensor 'both'.*both raw_contents and fp32_contents"):
        to_numpy(tensor)


def test_fill_tensor_writes_in_place() -> None:
    request = inference_pb2.PredictRequest()
    tensor = fill_tensor(request.inputs.add(), "x", np.ones((2, 2), np.int64))
    assert request.inputs[0].name == "x"
    assert tensor.shape == request.inputs[0].shape
    np.testing.assert_array_equal(to_numpy(request.inputs[0]), np.ones((2, 2), np.int64))


def test_predict_request_carries_every_option() -> None:
    request = build_predict_request(
        "m",
        {"a": np.zeros((1, 3), np.float32), "b": [[1, 2]]},
        version=4,
        label="canary",
        outputs=["y"],
        request_id="req-1",
        parameters={"flag": True, "n": 3, "x": 0.5, "s": "hi", "np": np.int32(9)},  # type: ignore[dict-item]
        routing_key="user-7",
    )
    assert (request.model_name, request.model_version, request.version_label) == ("m", 4, "canary")
    assert list(request.requested_outputs) == ["y"]
    assert (request.id, request.routing_key) == ("req-1", "user-7")
    assert request.output_encoding == tensor_pb2.TENSOR_ENCODING_RAW
    assert [t.name for t in request.inputs] == ["a", "b"]
    params = get_parameters(request.parameters)
    assert params == {"flag": True, "n": 3, "x": 0.5, "s": "hi", "np": 9}
    assert request.parameters["flag"].WhichOneof("value") == "bool_param"  # bool is not sent as int
    assert request.parameters["n"].WhichOneof("value") == "int64_param"


def test_request_defaults_leave_fields_unset() -> None:
    request = build_stream_request("m", {}, None, None, None, None, None, None, chunk_rows=None)
    assert request.model_version == 0 and request.version_label == "" and request.chunk_rows == 0
    assert build_stream_request("m", {}, None, None, None, None, None, None, chunk_rows=5).chunk_rows == 5


def test_bad_parameter_type_is_refused() -> None:
    with pytest.raises(TypeError, match="parameter 'p'"):
        build_predict_request("m", {}, None, None, None, None, {"p": [1]}, None)  # type: ignore[dict-item]
