"""A request laid out like one already accepted is decoded without the checks; nothing else is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2
from server.api import inputs as inputs_module
from server.api.inputs import InputDecoder
from server.core.errors import InvalidArgument
from server.core.types import InferRequest
from server.models.config import load_config
from server.models.validation import InputValidator

CONFIG = """name: "ranker"
engine: "onnxruntime"
max_batch_size: 64
input { name: "features" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "score" data_type: DATA_TYPE_FP32 dims: [-1, 1] }
"""


@pytest.fixture
def validator(tmp_path: Path) -> InputValidator:
    path = tmp_path / "config.pbtxt"
    path.write_text(CONFIG)
    return InputValidator(load_config(path, model_name="ranker"))


def message(array: np.ndarray, name: str = "features") -> inference_pb2.PredictRequest:
    return inference_pb2.PredictRequest(model_name="ranker", inputs=[from_numpy(name, array)])


def decode(
    decoder: InputDecoder, validator: InputValidator, msg: inference_pb2.PredictRequest
) -> tuple[dict[str, np.ndarray], int]:
    request = InferRequest(model="ranker", inputs={}, id="r")
    decoded, rows = asyncio.run(decoder.decode(msg, request, validator))
    return dict(decoded.inputs), rows


def test_a_request_laid_out_like_an_accepted_one_is_decoded_without_the_checks(
    validator: InputValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = InputDecoder()
    first = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs, rows = decode(decoder, validator, message(first))
    assert rows == 2 and len(validator.layouts) == 1
    np.testing.assert_array_equal(inputs["features"], first)

    def checked(*args: object, **kwargs: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(decoder, "describe", checked)
    monkeypatch.setattr(validator, "check", checked)
    second = first + 10
    inputs, rows = decode(decoder, validator, message(second))
    assert rows == 2
    assert inputs["features"].dtype == np.float32 and inputs["features"].shape == (2, 4)
    np.testing.assert_array_equal(inputs["features"], second)


def test_typed_contents_beside_raw_ones_are_refused_even_after_the_raw_layout_was_accepted(
    validator: InputValidator,
) -> None:
    decoder = InputDecoder()
    array = np.ones((1, 4), np.float32)
    decode(decoder, validator, message(array))
    both = message(array)
    both.inputs[0].fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(InvalidArgument, match="has both raw_contents and fp32_contents"):
        decode(decoder, validator, both)


@pytest.mark.parametrize(
    ("array", "name", "error"),
    [
        (np.ones((1, 5), np.float32), "features", "expected shape"),
        (np.ones((1, 4), np.float64), "features", "expected FP32"),
        (np.ones((1, 4), np.float32), "other", "other"),
        (np.ones((65, 4), np.float32), "features", "max_batch_size"),
    ],
)
def test_a_layout_that_differs_from_an_accepted_one_is_checked(
    validator: InputValidator, array: np.ndarray, name: str, error: str
) -> None:
    decoder = InputDecoder()
    decode(decoder, validator, message(np.ones((1, 4), np.float32)))
    with pytest.raises(InvalidArgument, match=error):
        decode(decoder, validator, message(array, name))


def test_a_smaller_element_cap_is_not_bypassed_by_a_layout_another_decoder_accepted(validator: InputValidator) -> None:
    decode(InputDecoder(), validator, message(np.ones((4, 4), np.float32)))
    with pytest.raises(InvalidArgument, match="max-request-elements"):
        decode(InputDecoder(max_elements=8), validator, message(np.ones((4, 4), np.float32)))


def test_a_client_sending_ever_new_shapes_never_grows_the_memo_past_its_cap(
    validator: InputValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs_module, "MAX_KNOWN_LAYOUTS", 4)
    decoder = InputDecoder()
    for rows in range(1, 12):
        decode(decoder, validator, message(np.ones((rows, 4), np.float32)))
        assert len(validator.layouts) <= 4


def test_typed_requests_are_not_remembered(validator: InputValidator) -> None:
    msg = inference_pb2.PredictRequest(
        model_name="ranker", inputs=[from_numpy("features", np.ones((1, 4), np.float32), raw=False)]
    )
    inputs, _ = decode(InputDecoder(), validator, msg)
    assert validator.layouts == {}
    np.testing.assert_array_equal(inputs["features"], np.ones((1, 4), np.float32))


def oip(array: np.ndarray, *, also_contents: bool = False) -> tuple[object, list[bytes] | None]:
    from inferd.oip.v2 import grpc_service_pb2 as pb
    from server.api.codec import RequestIds
    from server.api.oip import codec as oip_codec

    message = pb.ModelInferRequest(model_name="ranker")
    tensor = message.inputs.add(name="features", datatype="FP32", shape=list(array.shape))
    if also_contents:
        tensor.contents.fp32_contents.extend(array.reshape(-1).tolist())
    message.raw_input_contents.append(array.tobytes())
    _request, adapted, payloads = oip_codec.decode(RequestIds(), message, None)
    return adapted, payloads


def test_oip_requests_with_raw_input_contents_are_remembered_and_decoded_alike(
    validator: InputValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = InputDecoder()

    def run(array: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        adapted, payloads = oip(array)
        request = InferRequest(model="ranker", inputs={}, id="r")
        decoded, rows = asyncio.run(decoder.decode(adapted, request, validator, payloads))  # type: ignore[arg-type]
        return dict(decoded.inputs), rows

    first = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert run(first)[1] == 3 and len(validator.layouts) == 1
    monkeypatch.setattr(decoder, "describe", lambda *a, **k: pytest.fail("checked again"))
    inputs, rows = run(first * 2)
    assert rows == 3
    np.testing.assert_array_equal(inputs["features"], first * 2)
    short = np.ones((3, 3), np.float32)  # 36 bytes for a [3, 4] shape: a different key, checked
    adapted, payloads = oip(np.ones((3, 4), np.float32))
    assert payloads is not None
    payloads[0] = short.tobytes()
    monkeypatch.undo()
    with pytest.raises(InvalidArgument, match="raw_contents has 36 bytes"):
        asyncio.run(decoder.decode(adapted, InferRequest(model="ranker", inputs={}, id="r"), validator, payloads))  # type: ignore[arg-type]
