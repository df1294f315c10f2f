"""Every bad input gets a clear status and message, and the server keeps serving everyone else."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2
from tests.support import ServerThread


def _request(model: str = "scale", x: np.ndarray | None = None, **fields: object) -> inference_pb2.PredictRequest:
    if x is None:
        x = np.ones((2, 4), dtype=np.float32)
    return inference_pb2.PredictRequest(model_name=model, inputs=[from_numpy("x", x)], **fields)  # type: ignore[arg-type]


def _error(stub: inference_pb2_grpc.InferenceServiceStub, request: inference_pb2.PredictRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=10)
    return info.value


def _assert_still_serving(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    reply = stub.Predict(_request(), timeout=10)
    np.testing.assert_array_equal(to_numpy(reply.outputs[0]), np.full((2, 4), 2.0, dtype=np.float32))


def test_unknown_model_is_not_found_naming_the_model(stub):
    err = _error(stub, _request("nosuchmodel"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'nosuchmodel' not found" in err.details()
    _assert_still_serving(stub)


def test_unknown_version_is_not_found_naming_model_and_version(stub):
    err = _error(stub, _request(model_version=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'scale' version 7 not found" in err.details()
    assert "versions: 1" in err.details()


def test_unknown_label_is_not_found_naming_the_label(stub):
    err = _error(stub, _request(version_label="canary"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "no version label 'canary'" in err.details()
    assert "stable" in err.details()


def test_known_label_routes_to_its_version(stub):
    reply = stub.Predict(_request(version_label="stable"), timeout=10)
    assert reply.model_version == 1


def test_wrong_input_name_is_invalid_argument_naming_the_tensor(stub):
    request = inference_pb2.PredictRequest(
        model_name="scale", inputs=[from_numpy("features", np.ones((1, 4), np.float32))]
    )
    err = _error(stub, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'features' is not an input of model 'scale' (inputs: x)" in err.details()


def test_missing_input_is_invalid_argument_naming_the_tensor(stub):
    err = _error(stub, inference_pb2.PredictRequest(model_name="scale"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x' (FP32 [-1, 4]) of model 'scale' is missing" in err.details()


def test_wrong_dtype_names_tensor_expected_and_received(stub):
    err = _error(stub, _request(x=np.ones((2, 4), dtype=np.float64)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "input 'x' of model 'scale': expected FP32, received FP64"
    _assert_still_serving(stub)


def test_wrong_shape_names_tensor_expected_and_received(stub):
    err = _error(stub, _request(x=np.ones((2, 5), dtype=np.float32)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "input 'x' of model 'scale': expected shape [-1, 4], received [2, 5]"


def test_raw_bytes_that_disagree_with_shape_are_invalid_argument(stub):
    tensor = tensor_pb2.Tensor(name="x", data_type=tensor_pb2.DATA_TYPE_FP32, shape=[2, 4], raw_contents=b"\x00" * 12)
    err = _error(stub, inference_pb2.PredictRequest(model_name="scale", inputs=[tensor]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor 'x'" in err.details()
    assert "12 bytes" in err.details() and "needs 32" in err.details()
    _assert_still_serving(stub)


def test_batch_over_max_batch_size_is_invalid_argument(stub):
    err = _error(stub, _request(x=np.ones((9, 4), dtype=np.float32)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "9 rows exceed max_batch_size 8" in err.details()


def test_unknown_requested_output_is_invalid_argument(stub):
    err = _error(stub, _request(requested_outputs=["z"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requested output 'z' is not an output of model 'scale'" in err.details()


def test_typed_contents_with_the_wrong_count_are_invalid_argument(stub):
    tensor = tensor_pb2.Tensor(name="x", data_type=tensor_pb2.DATA_TYPE_FP32, shape=[1, 4], fp32_contents=[1, 2])
    err = _error(stub, inference_pb2.PredictRequest(model_name="scale", inputs=[tensor]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor 'x'" in err.details() and "needs 4 elements but 2 were sent" in err.details()


def test_garbage_bytes_are_invalid_argument(small_server: ServerThread):
    with grpc.insecure_channel(small_server.address) as channel:
        call = channel.unary_unary("/inferd.v1.InferenceService/Predict")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid inferd.v1.PredictRequest" in info.value.details()


def test_unexpected_engine_failure_is_internal_with_request_id_and_traceback_only_in_log(stub, caplog):
    x = np.full((1, 4), 13.0, dtype=np.float32)
    with caplog.at_level(logging.ERROR, logger="inferd"):
        err = _error(stub, _request("flaky", x=x, id="req-13"))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "request id req-13" in err.details()
    assert "secret sauce" not in err.details() and "Traceback" not in err.details()
    logged = [r for r in caplog.records if "req-13" in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "secret sauce" in str(logged[0].exc_info[1])
    ok = stub.Predict(_request("flaky"), timeout=10)
    assert ok.model_version == 1


def test_internal_error_without_request_id_gets_one_generated(stub):
    err = _error(stub, _request("flaky", x=np.full((1, 4), 13.0, dtype=np.float32)))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "request id " in err.details() and "request id unknown" not in err.details()


def test_failed_model_is_unavailable_with_its_reason(stub):
    err = _error(stub, _request("broken"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "boom at import" in err.details()
