"""``inferd config MODEL`` prints the config a bare ``model.onnx`` is served with, ready to keep.

The round trip: the printed text, saved as the model's config.pbtxt and loaded, gives the same
signature (and prints the same text again).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server_process import REPO_ROOT, ServerProcess, tool_env

pytestmark = pytest.mark.e2e
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


def inferd(command: str, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command, *args, "--address", address],
        cwd=REPO_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def scaler_graph() -> onnx.ModelProto:
    """features FP32 [batch, 3] -> Mul by the initializer 2 -> scaled FP32 [batch, 3]."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["features", "two"], ["scaled"])], "scaler", [x], [y], [two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("derived-config-models")
    (root / "scaler" / "1").mkdir(parents=True)
    onnx.save(scaler_graph(), str(root / "scaler" / "1" / "model.onnx"))
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(repository, tmp_path_factory.mktemp("derived-config-server")).wait_ready()
    yield process
    process.terminate()


def test_inferd_config_prints_a_derived_config_that_round_trips(
    server: ServerProcess, repository: Path, inferd_command: str
) -> None:
    derived = inferd(inferd_command, server.address, "config", "scaler")
    assert derived.returncode == 0, derived.stderr
    assert "save it as scaler/config.pbtxt" in derived.stdout
    assert "max_batch_size: 8" in derived.stdout
    assert 'name: "features"' in derived.stdout and "data_type: DATA_TYPE_FP32" in derived.stdout
    assert "derived from scaler/1/model.onnx" in server.log()
    before = json.loads(inferd(inferd_command, server.address, "metadata", "scaler").stdout)

    (repository / "scaler" / "config.pbtxt").write_text(derived.stdout)
    loaded = inferd(inferd_command, server.address, "load", "scaler")
    assert loaded.returncode == 0, loaded.stderr
    after = json.loads(inferd(inferd_command, server.address, "metadata", "scaler").stdout)
    assert (after["inputs"], after["outputs"], after["max_batch_size"]) == (
        before["inputs"],
        before["outputs"],
        before["max_batch_size"],
    )
    again = inferd(inferd_command, server.address, "config", "scaler")
    assert again.stdout == derived.stdout
    predicted = inferd(inferd_command, server.address, "predict", "scaler", "--input", "features=[[1,2,3]]")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["outputs"]["scaled"]["data"] == [[2.0, 4.0, 6.0]]


def test_inferd_config_of_a_model_that_is_not_there_exits_1(server: ServerProcess, inferd_command: str) -> None:
    result = inferd(inferd_command, server.address, "config", "nope")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower(), result.stderr
