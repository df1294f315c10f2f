"""Model control details: polling reloads changed files, an API unload sticks against polling, a cancelled
LoadModel does not strand its model, unknown names cost nothing, the admin service can live on its own
localhost port, and metadata describes the default version of a split model."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from server.core.types import SlotState
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model

#: opened by a test to let GATED_MODEL's load() finish; the model imports it from this module
LOAD_GATE = threading.Event()

GATED_MODEL = """
import numpy as np

class Model:
    def load(self):
        from tests.integration.test_model_control import LOAD_GATE
        LOAD_GATE.wait(30)

    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * 5}
"""


def predict(channel: grpc.Channel, model: str) -> inference_pb2.PredictResponse:
    request = inference_pb2.PredictRequest(
        model_name=model, inputs=[from_numpy("x", np.ones((1, 4), dtype=np.float32))]
    )
    return inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=10)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    LOAD_GATE.clear()
    yield LOAD_GATE
    LOAD_GATE.set()  # never leave a loader thread blocked


def test_polling_reloads_a_version_whose_files_changed(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path, poll_interval=0.05) as server, grpc.insecure_channel(server.address) as channel:
        assert to_numpy(predict(channel, "m").outputs[0])[0, 0] == 2.0
        model_py = tmp_path / "m" / "1" / "model.py"
        model_py.write_text(scale_model(3))
        os.utime(model_py, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # a new mtime even on coarse clocks
        eventually(lambda: to_numpy(predict(channel, "m").outputs[0])[0, 0] == 3.0, what="the reloaded version")
        assert predict(channel, "m").model_version == 1


def test_an_api_unload_is_not_undone_by_polling_until_load_model(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path, poll_interval=0.05) as server, grpc.insecure_channel(server.address) as channel:
        admin = admin_pb2_grpc.ModelServiceStub(channel)
        admin.UnloadModel(admin_pb2.UnloadModelRequest(name="m"), timeout=10)
        assert server.server is not None
        for _ in range(5):  # several polls pass; the model stays unloaded
            server.call(server.server.manager.poll_once())
        with pytest.raises(grpc.RpcError) as info:
            predict(channel, "m")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        admin.LoadModel(admin_pb2.LoadModelRequest(name="m"), timeout=10)
        assert predict(channel, "m").model_version == 1


def test_a_cancelled_load_model_still_brings_the_model_up(tmp_path: Path, gate: threading.Event):
    with ServerThread(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        assert server.server is not None
        registry, manager = server.server.registry, server.server.manager
        write_model(tmp_path, "slow", SCALE_CONFIG, {1: GATED_MODEL})
        admin = admin_pb2_grpc.ModelServiceStub(channel)
        call = admin.LoadModel.future(admin_pb2.LoadModelRequest(name="slow"), timeout=30)

        def loading() -> bool:
            entry = registry.get("slow")
            return entry is not None and entry.slots[1].state is SlotState.LOADING

        eventually(loading, what="slow LOADING")
        call.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
        gate.set()
        eventually(lambda: registry.entry("slow").serving, what="slow READY after its LoadModel was cancelled")
        assert to_numpy(predict(channel, "slow").outputs[0])[0, 0] == 5.0
        loaded = registry.entry("slow").slots[1]
        retry = admin.LoadModel(admin_pb2.LoadModelRequest(name="slow"), timeout=30)
        assert [(v.version, v.state) for v in retry.status.versions] == [(1, inference_pb2.VERSION_STATE_READY)]
        assert registry.entry("slow").slots[1] is loaded  # a retry of a completed load changes nothing
        assert server.call(manager.poll_once()) == []  # the load completed: polling agrees it is loaded
        model_py = tmp_path / "slow" / "1" / "model.py"
        os.utime(model_py, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        assert server.call(manager.poll_once()) == ["slow"]  # and still picks up a change of its files
        assert registry.entry("slow").serving


def test_unknown_model_names_answer_not_found_and_leave_no_state(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        assert server.server is not None
        admin = admin_pb2_grpc.ModelServiceStub(channel)
        for i in range(200):
            name = f"ghost-{i}-" + "x" * 2000
            for rpc, request in (
                (admin.UnloadModel, admin_pb2.UnloadModelRequest(name=name)),
                (admin.SetTraffic, admin_pb2.SetTrafficRequest(name=name, version_labels={"stable": 1})),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    rpc(request, timeout=10)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(server.server.manager._locks) == 0


def test_model_service_on_a_separate_admin_port_is_not_on_the_main_port(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path, admin_port=0) as server:
        assert server.server is not None and server.server.admin_port != server.server.port
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                admin_pb2_grpc.ModelServiceStub(channel).RepositoryIndex(admin_pb2.RepositoryIndexRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert predict(channel, "m").model_version == 1
        with grpc.insecure_channel(f"127.0.0.1:{server.server.admin_port}") as admin_channel:
            index = admin_pb2_grpc.ModelServiceStub(admin_channel).RepositoryIndex(
                admin_pb2.RepositoryIndexRequest(), timeout=5
            )
            assert [m.name for m in index.models] == ["m"]
            with pytest.raises(grpc.RpcError) as info:
                predict(admin_channel, "m")
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metadata_of_a_split_model_describes_its_default_version_every_time(tmp_path: Path):
    config = SCALE_CONFIG + (
        "version_policy { all {} }\n"
        'version_labels { key: "stable" value: 1 }\nversion_labels { key: "canary" value: 2 }\n'
        'traffic { label: "stable" weight: 50 }\ntraffic { label: "canary" weight: 50 }\n'
    )
    write_model(tmp_path, "m", config, {1: scale_model(1), 2: scale_model(2)})
    with ServerThread(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        versions = {
            stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="m"), timeout=5).version for _ in range(30)
        }
        assert versions == {1}
