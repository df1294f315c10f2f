"""The SDK's ModelControl / AsyncModelControl drive inferd.v1.ModelService on a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferd import AsyncClient, AsyncModelControl, Client, ModelControl
from inferd.errors import FailedPrecondition, NotFound
from inferd.v1 import inference_pb2
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

X = {"x": np.ones((1, 4), dtype=np.float32)}


@pytest.fixture()
def server(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG + "version_policy { all {} }\n", {1: scale_model(1), 2: scale_model(2)})
    with ServerThread(tmp_path) as running:
        yield running


def test_model_control_relabels_unloads_and_reloads(server: ServerThread):
    with Client(server.address, timeout=10) as client:
        control = ModelControl(client)
        assert client.predict_response("m", X).version == 2
        status = control.set_traffic("m", labels={"stable": 1})
        assert {v.version: list(v.labels) for v in status.versions} == {1: ["stable"], 2: []}
        assert client.predict_response("m", X).version == 1
        with pytest.raises(FailedPrecondition, match="version 9"):
            control.set_traffic("m", labels={"stable": 9})
        status = control.unload("m", 1)
        assert [v.version for v in status.versions] == [2]
        assert client.predict_response("m", X).version == 2
        status = control.load("m")
        assert [(v.version, v.state) for v in status.versions] == [
            (1, inference_pb2.VERSION_STATE_READY),
            (2, inference_pb2.VERSION_STATE_READY),
        ]
        (model,) = control.repository_index()
        assert model.name == "m" and list(model.versions_on_disk) == [1, 2]
        with pytest.raises(NotFound, match="no_such_model"):
            control.load("no_such_model")


async def test_async_model_control_unloads_a_model(server: ServerThread):
    async with AsyncClient(server.address, timeout=10) as client:
        control = AsyncModelControl(client)
        status = await control.load("m", [2])
        assert [v.version for v in status.versions] == [2]
        await control.unload("m")
        with pytest.raises(NotFound):
            await client.predict("m", X)
        assert [m.name for m in await control.repository_index()] == ["m"]
