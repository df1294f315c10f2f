"""Hostile files: artefacts that lead out of the repository, TorchScript that touches files, engines an
operator refuses, and what error messages may show a client (issue 10, items 4 and 5).

One repository (with an ``outside`` folder beside it) holds every case; the server is real and is
called over real channels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from server.cli.main import build_parser
from server.cli.serve import server_options
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

READY = inference_pb2.VERSION_STATE_READY
FAILED = inference_pb2.VERSION_STATE_FAILED

ONNX_CONFIG = SCALE_CONFIG
TORCH_CONFIG = SCALE_CONFIG + 'engine: "torch"\n'

#: a model.py outside the repository that leaves a marker file when it is imported
MARKER_MODEL = """
from pathlib import Path
Path(MARKER).write_text("imported")

class Model:
    def infer(self, inputs):
        return {"y": inputs["x"]}
"""


def onnx_doubler(external: str | None = None) -> onnx.ModelProto:
    """y = x @ (2·I), with the weight inline or, given ``external``, in that external data file."""
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "W")
    if external is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", "64")):
            weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class FileReader(torch.nn.Module):
    """Adds the first 4 floats of another file to its input: serves that file's bytes to any caller."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file(self.path, size=4, dtype=torch.float32)


class FileWriter(torch.nn.Module):
    """Writes a file when it is *loaded*: torch.jit.load runs __setstate__."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        torch.save(torch.ones(1), self.path)


def _onnx_model(root: Path, name: str, model: onnx.ModelProto) -> None:
    write_model(root, name, ONNX_CONFIG)
    (root / name / "1").mkdir()
    onnx.save(model, str(root / name / "1" / "model.onnx"))


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def build(root: Path, outside: Path) -> None:
    """Every case of this file: one model folder each."""
    outside.mkdir()
    onnx.save(onnx_doubler(), str(outside / "model.onnx"))
    (outside / "weights.bin").write_bytes((np.eye(4, dtype=np.float32) * 2).tobytes())
    (outside / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (outside / "model.py").write_text(MARKER_MODEL.replace("MARKER", repr(str(outside / "imported.txt"))))

    _onnx_model(root, "onnx_ok", onnx_doubler())
    write_model(root, "onnx_link", ONNX_CONFIG)
    _link(root / "onnx_link" / "1" / "model.onnx", outside / "model.onnx")
    _onnx_model(root, "onnx_external", onnx_doubler("weights.bin"))
    _link(root / "onnx_external" / "1" / "weights.bin", outside / "weights.bin")
    write_model(root, "py_link", SCALE_CONFIG)
    _link(root / "py_link" / "1" / "model.py", outside / "model.py")

    write_model(root, "ts_ok", TORCH_CONFIG)
    (root / "ts_ok" / "1").mkdir()
    torch.jit.script(Doubler()).save(str(root / "ts_ok" / "1" / "model.pt"))
    write_model(root, "ts_reader", TORCH_CONFIG)
    (root / "ts_reader" / "1").mkdir()
    torch.jit.script(FileReader(str(outside / "secret.bin"))).save(str(root / "ts_reader" / "1" / "model.pt"))
    write_model(root, "ts_writer", TORCH_CONFIG)
    (root / "ts_writer" / "1").mkdir()
    torch.jit.script(FileWriter(str(outside / "written.pt"))).save(str(root / "ts_writer" / "1" / "model.pt"))
    assert not (outside / "written.pt").exists()  # saving runs __getstate__ only; loading runs __setstate__

    # what a failure may show: these fail with paths in their raw reasons
    write_model(root, "py_abspath", SCALE_CONFIG, {1: "raise RuntimeError('cannot run from ' + __file__)\n"})
    write_model(root, "empty", SCALE_CONFIG)
    (root / "empty" / "1").mkdir()
    write_model(root, "badconfig", "max_batch_size: 8\ninput { name: 'x' data_typo: 3 }\n", {1: scale_model(1)})
    write_model(outside, "dirlink", SCALE_CONFIG, {1: scale_model(1)})
    (root / "dirlink").symlink_to(outside / "dirlink")
    write_model(root, "newline\n", SCALE_CONFIG, {1: scale_model(1)})


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("confinement")
    root, outside = base / "repo", base / "outside"
    root.mkdir()
    build(root, outside)
    return root, outside


@pytest.fixture(scope="module")
def server(repository: tuple[Path, Path]) -> Iterator[ServerThread]:
    with ServerThread(repository[0]) as running:
        yield running


@pytest.fixture()
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


def _versions(channel: grpc.Channel, name: str) -> list[inference_pb2.VersionStatus]:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    return list(stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name=name), timeout=30).versions)


def _only_version(channel: grpc.Channel, name: str) -> inference_pb2.VersionStatus:
    versions = _versions(channel, name)
    assert len(versions) == 1, versions
    return versions[0]


def _predict(channel: grpc.Channel, name: str) -> np.ndarray:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    x = np.ones((1, 4), dtype=np.float32)
    reply = stub.Predict(inference_pb2.PredictRequest(model_name=name, inputs=[from_numpy("x", x)]), timeout=30)
    return to_numpy(reply.outputs[0])


# -- artefacts that lead out of the repository -----------------------------------------------------


def test_controls_in_the_same_repository_serve(channel):
    assert _predict(channel, "onnx_ok").tolist() == [[2.0] * 4]
    assert _predict(channel, "ts_ok").tolist() == [[2.0] * 4]


def test_an_onnx_artefact_symlinked_outside_fails_its_version_saying_so(channel):
    status = _only_version(channel, "onnx_link")
    assert status.state == FAILED
    assert "1/model.onnx' is a symlink that leads outside the model repository" in status.reason
    with pytest.raises(grpc.RpcError) as err:
        _predict(channel, "onnx_link")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_onnx_external_data_symlinked_outside_fails_its_version(channel):
    status = _only_version(channel, "onnx_external")
    assert status.state == FAILED
    assert "weights.bin' is a symlink that leads outside the model repository" in status.reason


def test_a_model_py_symlinked_outside_fails_and_is_never_imported(channel, repository):
    _root, outside = repository
    status = _only_version(channel, "py_link")
    assert status.state == FAILED
    assert "1/model.py' is a symlink that leads outside the model repository" in status.reason
    assert not (outside / "imported.txt").exists(), "the outside model.py ran"


def test_a_model_folder_symlinked_outside_is_refused_with_the_reason(channel):
    with pytest.raises(grpc.RpcError) as err:
        _predict(channel, "dirlink")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "'dirlink' is a symlink that leads outside the model repository" in err.value.details()


def test_a_version_folder_symlinked_outside_is_skipped_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    root, outside = tmp_path / "repo", tmp_path / "outside"
    write_model(root, "vlink", SCALE_CONFIG, {1: scale_model(2)})
    write_model(outside, "elsewhere", SCALE_CONFIG, {2: scale_model(3)})
    (root / "vlink" / "2").symlink_to(outside / "elsewhere" / "2", target_is_directory=True)
    (root / "vlink" / "notes").mkdir()
    with ServerThread(root) as running, grpc.insecure_channel(running.address) as opened:
        assert [v.version for v in _versions(opened, "vlink")] == [1]
        assert _predict(opened, "vlink").tolist() == [[2.0] * 4]
    skipped = [r.getMessage() for r in caplog.records if r.name == "inferd.repository"]
    assert any("vlink: version folder 2 skipped" in m and "outside the model repository" in m for m in skipped)
    assert any("vlink: folder 'notes' skipped: not a version number" in m for m in skipped)


def test_a_model_name_with_a_trailing_newline_is_refused(channel, repository, caplog):
    index = admin_pb2_grpc.ModelServiceStub(channel).RepositoryIndex(admin_pb2.RepositoryIndexRequest(), timeout=30)
    assert "newline\n" not in [m.name for m in index.models]
    with pytest.raises(grpc.RpcError) as err:
        admin_pb2_grpc.ModelServiceStub(channel).LoadModel(admin_pb2.LoadModelRequest(name="newline\n"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'newline\\n' is not a valid model name" in err.value.details()


# -- TorchScript that touches files ----------------------------------------------------------------


def test_torchscript_reading_a_file_with_from_file_fails_to_load(channel):
    status = _only_version(channel, "ts_reader")
    assert status.state == FAILED
    assert "model.pt refused" in status.reason and "from_file" in status.reason


def test_torchscript_writing_a_file_when_loaded_is_refused_before_it_runs(channel, repository):
    _root, outside = repository
    status = _only_version(channel, "ts_writer")
    assert status.state == FAILED
    assert "model.pt refused" in status.reason and "save" in status.reason
    assert not (outside / "written.pt").exists(), "the archive's __setstate__ ran"


# -- --allowed-engines -----------------------------------------------------------------------------


def test_allowed_engines_refuses_python_models_naming_the_flag(tmp_path):
    root = tmp_path / "repo"
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "explicit", SCALE_CONFIG + 'engine: "python"\n', {1: scale_model(2)})
    _onnx_model(root, "doubler", onnx_doubler())
    allowed = ("onnxruntime", "torch", "tensorrt")
    with ServerThread(root, allowed_engines=allowed) as running, grpc.insecure_channel(running.address) as opened:
        for name in ("scale", "explicit"):
            status = _only_version(opened, name)
            assert status.state == FAILED
            assert "engine python is not allowed on this server (--allowed-engines onnxruntime,tensorrt,torch)" in (
                status.reason
            )
        assert _predict(opened, "doubler").tolist() == [[2.0] * 4]
        info = inference_pb2_grpc.InferenceServiceStub(opened).ServerMetadata(inference_pb2.ServerMetadataRequest())
        assert "python" not in info.engines


def test_allowed_engines_flag_reaches_the_server_options(tmp_path):
    args = build_parser().parse_args(["serve", "-r", str(tmp_path), "--allowed-engines", "onnxruntime, torch"])
    assert server_options(args).allowed_engines == ("onnxruntime", "torch")
    assert server_options(build_parser().parse_args(["serve", "-r", str(tmp_path)])).allowed_engines is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "-r", str(tmp_path), "--allowed-engines", "onnxruntime,pickle"])


# -- what error messages show ----------------------------------------------------------------------


def test_a_20_kb_model_name_is_not_found_with_a_short_message(channel):
    name = "m" * 20_000
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    admin = admin_pb2_grpc.ModelServiceStub(channel)
    calls = {
        "Predict": lambda: stub.Predict(inference_pb2.PredictRequest(model_name=name), timeout=30),
        "ModelMetadata": lambda: stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name=name), timeout=30),
        "ModelStatistics": lambda: stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name=name), timeout=30),
        "UnloadModel": lambda: admin.UnloadModel(admin_pb2.UnloadModelRequest(name=name), timeout=30),
    }
    for method, call in calls.items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, (method, err.value.details())
        details = err.value.details()
        assert len(details) < 300, (method, details)
        assert "(20000 characters)" in details
        assert " and " in details and " more)" in details, details  # the model list is cut short too
    with pytest.raises(grpc.RpcError) as err:
        admin.LoadModel(admin_pb2.LoadModelRequest(name=name), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.value.details()) < 300


def test_error_messages_and_statuses_never_show_the_repositorys_absolute_path(channel, repository):
    root, outside = repository
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    admin = admin_pb2_grpc.ModelServiceStub(channel)
    texts: list[str] = []
    for name in ("badconfig", "empty", "py_abspath", "onnx_link", "dirlink", "absent", "ts_reader"):
        with pytest.raises(grpc.RpcError) as err:
            _predict(channel, name)
        texts.append(err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        admin.LoadModel(admin_pb2.LoadModelRequest(name="absent"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    texts.append(err.value.details())
    for model in stub.ListModels(inference_pb2.ListModelsRequest(), timeout=30).models:
        texts.append(model.reason)
        for version in model.versions:
            texts.extend([version.reason, *version.engine_notes])
    texts.extend(m.reason for m in admin.RepositoryIndex(admin_pb2.RepositoryIndexRequest(), timeout=30).models)
    joined = "\n".join(texts)
    assert "badconfig/config.pbtxt:2" in joined  # paths relative to the repository root
    assert "py_abspath/1/model.py" in joined
    for forbidden in {str(root), str(root.resolve()), str(outside), str(outside.resolve())}:
        assert forbidden not in joined
