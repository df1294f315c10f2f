"""A shared repository of small Python models and a server serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inferd.v1 import inference_pb2_grpc
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

FLAKY_MODEL = """
import numpy as np

class Model:
    def infer(self, inputs):
        x = np.asarray(inputs["x"])
        if x.size and x.flat[0] == 13.0:
            raise ValueError("unlucky number in the secret sauce")
        return {"y": x.astype(np.float32) * 2}
"""

WIDE_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 1] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 600000] }
"""

WIDE_MODEL = """
import numpy as np

class Model:
    def infer(self, inputs):
        x = np.asarray(inputs["x"], dtype=np.float32)
        return {"y": np.repeat(x, 600000, axis=1)}
"""

IDENTITY_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, -1] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, -1] }
"""

IDENTITY_MODEL = """
class Model:
    def infer(self, inputs):
        return {"y": inputs["x"]}
"""


def build_small_repository(root: Path) -> Path:
    write_model(root, "scale", SCALE_CONFIG + 'version_labels { key: "stable" value: 1 }\n', {1: scale_model(2)})
    write_model(root, "flaky", SCALE_CONFIG, {1: FLAKY_MODEL})
    write_model(root, "broken", SCALE_CONFIG, {1: "raise RuntimeError('boom at import')\n"})
    write_model(root, "badconfig", 'max_batch_size: 8\ninput { name: "x" data_typo: 3 }\n', {1: scale_model(1)})
    write_model(root, "wide", WIDE_CONFIG, {1: WIDE_MODEL})
    write_model(root, "identity", IDENTITY_CONFIG, {1: IDENTITY_MODEL})
    return root


@pytest.fixture(scope="package")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = build_small_repository(tmp_path_factory.mktemp("small-repo"))
    with ServerThread(root, max_receive_message_mb=16, max_send_message_mb=16) as server:
        yield server


@pytest.fixture()
def stub(small_server: ServerThread) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    limit = 64 * 1024 * 1024
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    with grpc.insecure_channel(small_server.address, options=options) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
