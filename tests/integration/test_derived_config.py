"""A bare ``model.onnx`` is served with a config derived from its graph; other folders are skipped with a hint.

The ONNX graphs are built here with ``onnx.helper`` (as examples/onnx_graphs.py does), so each test shows
the exact graph signature it derives from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from inferd import Client, ModelControl  # noqa: E402
from inferd.v1.inference_pb2 import VersionState  # noqa: E402
from server.models.config import load_config  # noqa: E402
from server.models.repository import Repository  # noqa: E402
from tests.support import ServerThread, eventually  # noqa: E402

Dim = int | str


def relu_graph(shape: list[Dim], out_shape: list[Dim] | None = None, elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x -> Relu -> y, with the given (possibly symbolic) dims."""
    x = helper.make_tensor_value_info("x", elem, shape)
    y = helper.make_tensor_value_info("y", elem, out_shape or shape)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    save(relu_graph(["batch", 4]), root / "m" / "1" / "model.onnx")
    save(relu_graph([2, "n"]), root / "fixed" / "1" / "model.onnx")
    save(relu_graph(["batch", 4]), root / "flat" / "model.onnx")
    (root / "bad name" / "1").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "torchscript" / "1").mkdir(parents=True)
    (root / "torchscript" / "1" / "model.pt").write_bytes(b"not read: TorchScript has no readable signature")
    return root


def test_a_bare_model_onnx_loads_ready_and_predicts_with_a_derived_batching_config(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="inferd.repository"),
        ServerThread(repository) as server,
        Client(server.address) as client,
    ):
        statuses = {s.name: s for s in client.list_models()}
        assert statuses["m"].versions[0].state == VersionState.VERSION_STATE_READY, statuses["m"]
        meta = client.metadata("m")
        out = client.predict("m", {"x": np.array([[-1, 2, -3, 4], [5, -6, 7, -8]], dtype=np.float32)})
    assert meta.max_batch_size == 8
    assert [(t.name, list(t.shape)) for t in meta.inputs] == [("x", [-1, 4])]
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [("y", [-1, 4])]
    assert meta.config.name == "m"
    np.testing.assert_array_equal(out["y"], [[0, 2, 0, 4], [5, 0, 7, 0]])
    derived = [r.getMessage() for r in caplog.records if "derived from m/1/model.onnx" in r.getMessage()]
    assert derived and "x FP32 [-1, 4] -> y FP32 [-1, 4], max_batch_size 8" in derived[0], derived
    assert all(r.levelno == logging.INFO for r in caplog.records if "derived from" in r.getMessage())


def test_a_graph_without_a_leading_symbolic_dim_gets_max_batch_size_0(repository: Path) -> None:
    spec = Repository(repository).read_model("fixed").spec
    assert spec is not None
    assert spec.max_batch_size == 0
    assert [t.dims for t in spec.signature.inputs] == [(2, -1)]


def test_the_derived_config_written_next_to_the_model_loads_the_same_signature(repository: Path) -> None:
    derived = Repository(repository).read_model("m").spec
    assert derived is not None
    (repository / "m" / "config.pbtxt").write_text(text_format.MessageToString(derived.proto))
    written = load_config(repository / "m" / "config.pbtxt", model_name="m")
    assert written == derived  # every field the server acts on, the signature included


def test_folders_that_are_not_models_are_listed_in_repository_index_with_reason_and_hint(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="inferd.repository"),
        ServerThread(repository) as server,
        Client(server.address) as client,
    ):
        control = ModelControl(client)
        skipped = {s.folder: s.reason for s in control.skipped_folders()}
        models = {m.name for m in control.repository_index()}
    assert models == {"m", "fixed"}
    assert skipped["flat"] == "model.onnx is not in a version folder: move it to flat/1/model.onnx"
    assert "not a model name" in skipped["'bad name'"] and "rename the folder" in skipped["'bad name'"]
    assert skipped["empty"] == "no config.pbtxt and no version folder with a model (e.g. empty/1/model.onnx)"
    assert "torchscript/1/model.pt does not describe its own signature" in skipped["torchscript"]
    assert "write torchscript/config.pbtxt" in skipped["torchscript"]
    logged = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any("move it to flat/1/model.onnx" in line for line in logged), logged
    assert sum("'empty' skipped" in line for line in logged) == 1  # once, though every poll reads the folder


def test_a_graph_that_pins_down_no_signature_is_failed_with_the_reason(tmp_path: Path) -> None:
    save(relu_graph([]), tmp_path / "scalar" / "1" / "model.onnx")
    save(relu_graph(["b", 2], elem=TensorProto.COMPLEX64), tmp_path / "complex" / "1" / "model.onnx")
    (tmp_path / "garbage" / "1").mkdir(parents=True)
    (tmp_path / "garbage" / "1" / "model.onnx").write_bytes(b"\xff\xff\xff not protobuf")
    repo = Repository(tmp_path)
    scalar, complex_, garbage = (repo.read_model(n) for n in ("scalar", "complex", "garbage"))
    assert scalar.spec is None and "'x' is a scalar" in str(scalar.error), scalar.error
    assert "config.pbtxt: not found and none can be derived" in str(scalar.error)
    assert complex_.spec is None and "element type 14" in str(complex_.error), complex_.error
    assert garbage.spec is None and "not an ONNX model" in str(garbage.error), garbage.error


def test_initializers_a_graph_also_lists_as_inputs_are_not_inputs(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x, w], [y], [weight])
    save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=3),
        tmp_path / "g" / "1" / "model.onnx",
    )
    spec = Repository(tmp_path).read_model("g").spec
    assert spec is not None
    assert [t.name for t in spec.signature.inputs] == ["x"]
    assert spec.max_batch_size == 8


def test_polling_picks_up_a_new_version_of_a_model_without_config(tmp_path: Path) -> None:
    save(relu_graph(["batch", 4]), tmp_path / "m" / "1" / "model.onnx")
    with ServerThread(tmp_path, poll_interval=0.05) as server, Client(server.address) as client:
        assert client.metadata("m").version == 1
        save(relu_graph(["batch", 6]), tmp_path / "m" / "2" / "model.onnx")
        meta = eventually(lambda: (m := client.metadata("m")).version == 2 and m, what="version 2 served")
    assert [list(t.shape) for t in meta.inputs] == [[-1, 6]]  # derived again, from the new version
