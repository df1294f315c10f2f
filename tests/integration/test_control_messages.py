"""Model control and routing errors that name the problem: all-zero traffic weights are INVALID_ARGUMENT
(the config loader's rule), a label pointing at a missing version is named in NOT_FOUND, and the SDK's own
message-size error names max_message_bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd import Client
from inferd.errors import ResourceExhausted
from inferd.tensors import from_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc, model_config_pb2
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    write_model(tmp_path, "m", SCALE_CONFIG + "version_policy { all {} }\n", {1: scale_model(1), 2: scale_model(2)})
    with ServerThread(tmp_path) as running:
        yield running


def _set_traffic(channel: grpc.Channel, labels: dict[str, int], weights: dict[str, int]) -> None:
    request = admin_pb2.SetTrafficRequest(
        name="m",
        version_labels=labels,
        traffic=[model_config_pb2.TrafficWeight(label=k, weight=v) for k, v in weights.items()],
    )
    admin_pb2_grpc.ModelServiceStub(channel).SetTraffic(request, timeout=10)


def test_set_traffic_with_all_zero_weights_is_invalid_argument_and_keeps_the_old_split(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        _set_traffic(channel, {"stable": 1, "canary": 2}, {"stable": 9, "canary": 1})
        with pytest.raises(grpc.RpcError) as caught:
            _set_traffic(channel, {"stable": 1, "canary": 2}, {"stable": 0, "canary": 0})
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "traffic weights are all zero" in caught.value.details()
        listed = inference_pb2_grpc.InferenceServiceStub(channel).ListModels(inference_pb2.ListModelsRequest())
        assert [(w.label, w.weight) for w in listed.models[0].traffic] == [("stable", 9), ("canary", 1)]


def test_a_label_pointing_at_an_unloaded_version_is_named_in_not_found(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        _set_traffic(channel, {"canary": 2}, {})
        admin_pb2_grpc.ModelServiceStub(channel).UnloadModel(
            admin_pb2.UnloadModelRequest(name="m", version=2), timeout=10
        )
        request = inference_pb2.PredictRequest(
            model_name="m", version_label="canary", inputs=[from_numpy("x", np.ones((1, 4), dtype=np.float32))]
        )
        with pytest.raises(grpc.RpcError) as caught:
            inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "version 2 (label 'canary' points at it) not found" in caught.value.details()


def test_the_sdks_size_error_names_max_message_bytes(server: ServerThread) -> None:
    with Client(server.address, max_message_bytes=1024) as client, pytest.raises(ResourceExhausted) as caught:
        client.predict("m", {"x": np.ones((8, 4096), dtype=np.float32)})
    assert "max_message_bytes" in str(caught.value)
