"""Message size limits: above gRPC's 4 MiB by default, and a clear status naming the flag when exceeded."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import inference_pb2


def test_request_larger_than_grpc_default_4_mib_is_served(stub):
    big = np.ones((2, 1_000_000), dtype=np.float32)  # 8 MB in
    request = inference_pb2.PredictRequest(model_name="identity", inputs=[from_numpy("x", big)])
    reply = stub.Predict(request, timeout=30)
    np.testing.assert_array_equal(to_numpy(reply.outputs[0]), big)


def test_response_larger_than_grpc_default_4_mib_is_served(stub):
    x = np.ones((6, 1), dtype=np.float32)  # 6 rows x 600000 floats = 14.4 MB out
    reply = stub.Predict(inference_pb2.PredictRequest(model_name="wide", inputs=[from_numpy("x", x)]), timeout=30)
    assert to_numpy(reply.outputs[0]).shape == (6, 600000)


def test_request_over_the_receive_limit_names_limit_and_flag(stub):
    # the test server runs with --max-receive-message-mb 16
    big = np.ones((4, 1_100_000), dtype=np.float32)  # ~17.6 MB
    request = inference_pb2.PredictRequest(model_name="identity", inputs=[from_numpy("x", big)])
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16 MiB limit set by --max-receive-message-mb" in info.value.details()


def test_response_over_the_send_limit_names_limit_flag_and_predict_stream(stub):
    x = np.ones((8, 1), dtype=np.float32)  # 8 rows x 600000 floats = 19.2 MB > the test server's 16 MiB
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(inference_pb2.PredictRequest(model_name="wide", inputs=[from_numpy("x", x)]), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16 MiB limit set by --max-send-message-mb" in info.value.details()
    assert "PredictStream" in info.value.details()


def test_predict_stream_chunks_rows_and_sets_final_once(stub):
    x = np.arange(20 * 4, dtype=np.float32).reshape(20, 4)
    request = inference_pb2.PredictStreamRequest(model_name="scale", inputs=[from_numpy("x", x)], chunk_rows=8)
    messages = list(stub.PredictStream(request, timeout=30))
    assert [m.sequence_index for m in messages] == [0, 1, 2]
    assert [m.final for m in messages] == [False, False, True]
    rows = [to_numpy(m.outputs[0]).shape[0] for m in messages]
    assert rows == [8, 8, 4]
    joined = np.concatenate([to_numpy(m.outputs[0]) for m in messages])
    np.testing.assert_array_equal(joined, x * 2)


def test_chunked_stream_delivers_a_result_larger_than_the_send_limit_whole(stub):
    x = np.arange(32, dtype=np.float32).reshape(32, 1)  # 32 x 600000 floats = 76.8 MB in all
    request = inference_pb2.PredictStreamRequest(model_name="wide", inputs=[from_numpy("x", x)], chunk_rows=4)
    total = 0
    for message in stub.PredictStream(request, timeout=60):
        part = to_numpy(message.outputs[0])
        np.testing.assert_array_equal(part[:, 0], x[total : total + part.shape[0], 0])
        total += part.shape[0]
    assert total == 32
