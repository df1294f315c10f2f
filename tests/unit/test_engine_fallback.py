"""The engine fallback chain: preference order, parity against a reference, and the notes it leaves.

The parity and reference rules are checked as functions; the chain itself runs through a real server
(tests.support.ServerThread) on CPU, where TensorRT is absent: its reason is recorded and the next
engine serves, and a candidate that answers differently from the reference is skipped with the
measured error in its note.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import logging
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from engines.base import LoadSpec, Signature, TensorSig
from engines.parity import (
    ParityConfig,
    compare_output,
    compare_outputs,
    merge_reports,
    parity_config,
    parity_inputs,
)
from engines.selection import choose_reference, runs_on_gpu
from inferd.v1 import inference_pb2, inference_pb2_grpc
from server.cli.main import main as inferd_main
from server.core.types import SlotState
from server.models import gpu
from server.models.config import load_config
from server.models.slot import Slot
from tests.support import ServerThread, write_model

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..* is deprecated:DeprecationWarning")

CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""

DOUBLE_PY = """
import numpy as np

class Model:
    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * 2.0 + OFFSET}
"""


def double_py(offset: float = 0.0) -> str:
    return DOUBLE_PY.replace("OFFSET", repr(float(offset)))


def write_double_onnx(path: Path) -> None:
    """y = x * 2 as an ONNX graph with a dynamic batch axis."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


class Double(torch.nn.Module):
    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + self.offset


def write_double_pt(path: Path, offset: float = 0.0) -> None:
    torch.jit.save(torch.jit.script(Double(offset)), str(path))


def add_model(root: Path, name: str, extra: str, files: dict[str, object]) -> Path:
    """A model folder with CONFIG + ``extra`` and version 1 holding ``files`` (name → text, or a writer)."""
    model = write_model(root, name, CONFIG + extra)
    version = model / "1"
    version.mkdir(exist_ok=True)
    for filename, content in files.items():
        if callable(content):
            content(version / filename)
        else:
            (version / filename).write_text(str(content))
    return model


# --- parity as functions ------------------------------------------------------------------------------


def test_identical_outputs_pass_parity() -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    (diff,) = compare_outputs({"y": a}, {"y": a.copy()}, ["y"], 1e-3, 1e-3)
    assert diff.ok and diff.max_abs == 0.0


def test_an_offset_is_measured_and_fails() -> None:
    ref = np.zeros((2, 4), dtype=np.float32)
    diff = compare_output("y", ref + 1.0, ref, 1e-3, 1e-3)
    assert not diff.ok and diff.max_abs == 1.0 and diff.mismatched == 8 and diff.total == 8
    report = merge_reports([(diff,)], 1e-3, 1e-3)
    assert report.summary() == "output 'y': max abs error 1, 8/8 elements outside atol 0.001, rtol 0.001"
    (scaled,) = compare_outputs({"y": np.full(4, 2.2)}, {"y": np.full(4, 2.0)}, ["y"], 1e-3, 1e-3)
    assert scaled.max_rel == pytest.approx(0.1)


def test_relative_tolerance_scales_with_the_reference() -> None:
    ref = np.array([1000.0, 1.0], dtype=np.float32)
    assert compare_output("y", ref + np.array([0.5, 0.0], dtype=np.float32), ref, 1e-3, 1e-3).ok
    assert not compare_output("y", ref + np.array([0.0, 0.5], dtype=np.float32), ref, 1e-3, 1e-3).ok


def test_nan_matches_only_nan() -> None:
    ref = np.array([np.nan, 1.0], dtype=np.float32)
    assert compare_output("y", ref.copy(), ref, 0, 0).ok
    assert not compare_output("y", np.array([0.0, 1.0], dtype=np.float32), ref, 1e6, 0).ok


def test_integers_bytes_and_shapes_must_match_exactly() -> None:
    assert compare_output("ids", np.array([1, 2]), np.array([1, 2]), 0.5, 0.5).ok
    assert not compare_output("ids", np.array([1, 3]), np.array([1, 2]), 5.0, 5.0).ok
    strings = np.array([b"a", b"b"], dtype=object)
    assert compare_output("s", strings, strings.copy(), 0, 0).ok
    assert not compare_output("s", np.array([b"a", b"c"], dtype=object), strings, 0, 0).ok
    shape = compare_output("y", np.zeros((2, 4)), np.zeros((2, 5)), 1, 1)
    assert not shape.ok and "shape [2, 4] vs [2, 5]" in shape.detail
    (missing,) = compare_outputs({}, {"y": np.zeros(1)}, ["y"], 1, 1)
    assert "missing from the candidate" in missing.detail


def test_reports_keep_the_worst_batch() -> None:
    ref = np.zeros(4, dtype=np.float32)
    report = merge_reports(
        [
            compare_outputs({"y": ref + 0.1}, {"y": ref}, ["y"], 1, 1),
            compare_outputs({"y": ref + 0.3}, {"y": ref}, ["y"], 1, 1),
        ],
        1,
        1,
    )
    assert report.ok and report.batches == 2 and report.max_abs == pytest.approx(0.3)
    assert report.summary().startswith("max abs error 0.3 over 2 warm-up batch(es)")


def test_parity_inputs_are_the_warm_up_inputs_plus_a_random_batch() -> None:
    sig = Signature((TensorSig("x", "FP32", (-1, 4)),), (TensorSig("y", "FP32", (-1, 4)),))
    default = parity_inputs(sig, [], 8)
    assert [b["x"].shape for b in default] == [(1, 4), (2, 4)]
    assert not default[0]["x"].any() and default[1]["x"].any()
    configured = parity_inputs(sig, [("zero", (1, 4)), ("random", (8,))], 8)
    assert [b["x"].shape for b in configured] == [(1, 4), (4, 4), (8, 4)]
    assert parity_inputs(sig, [("random", (2,))], 8)[0]["x"].any()


def test_parity_configuration_and_default_tolerances() -> None:
    assert parity_config({}).tolerances("fp32") == (1e-3, 1e-3)
    assert parity_config({}).tolerances("fp16") == (1e-2, 1e-2)
    assert parity_config({}).tolerances("int8") == (5e-2, 5e-2)
    assert parity_config({"parity_atol": "0.5"}).tolerances("fp16") == (0.5, 1e-2)
    assert not parity_config({"parity_reference": "none"}).enabled
    with pytest.raises(Exception, match="parity_rtol"):
        parity_config({"parity_rtol": "lots"})
    with pytest.raises(Exception, match=">= 0"):
        parity_config({"parity_atol": "-1"})


def test_the_reference_is_onnxruntime_when_there_is_an_onnx_file_else_the_last_engine(tmp_path: Path) -> None:
    auto = ParityConfig()
    assert choose_reference(["tensorrt", "torch", "python"], tmp_path, auto, explicit=False) == "python"
    (tmp_path / "model.onnx").write_bytes(b"")
    assert choose_reference(["tensorrt", "torch"], tmp_path, auto, explicit=False) == "onnxruntime"
    assert choose_reference(["torch"], tmp_path, auto, explicit=False) is None, "nothing to choose between"
    assert choose_reference(["torch"], tmp_path, auto, explicit=True) == "onnxruntime"
    assert choose_reference(["a", "b"], tmp_path, ParityConfig(reference="none"), explicit=True) is None
    assert choose_reference(["torch", "python"], tmp_path, ParityConfig(reference="python"), explicit=True) == "python"
    with pytest.raises(Exception, match="not an engine"):
        choose_reference(["torch", "python"], tmp_path, ParityConfig(reference="tpu"), explicit=True)


def test_which_engines_count_as_gpu_loads(tmp_path: Path) -> None:
    sig = Signature((TensorSig("x", "FP32", (-1, 4)),), (TensorSig("y", "FP32", (-1, 4)),))
    cpu = LoadSpec("m", 1, tmp_path, sig)
    cuda = LoadSpec("m", 1, tmp_path, sig, device="cuda:0")
    assert runs_on_gpu("tensorrt", cpu)
    assert not runs_on_gpu("torch", cpu) and runs_on_gpu("torch", cuda)
    assert not runs_on_gpu("onnxruntime", cpu) and runs_on_gpu("onnxruntime", cuda)
    assert runs_on_gpu("onnxruntime", LoadSpec("m", 1, tmp_path, sig, parameters={"providers": "cuda,cpu"}))
    assert not runs_on_gpu(
        "onnxruntime", LoadSpec("m", 1, tmp_path, sig, device="cuda", parameters={"providers": "cpu"})
    )
    assert not runs_on_gpu("python", cuda)


# --- through a real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fallback-models")
    # TensorRT listed first: its plan is there, its runtime is not.
    add_model(
        root,
        "trt_first",
        'engine_preference: ["tensorrt", "onnxruntime"]\n',
        {"model.plan": "not a real plan", "model.onnx": write_double_onnx},
    )
    # A Python model deliberately off by 1.0, listed before onnxruntime.
    add_model(
        root,
        "off_by_one",
        'engine_preference: ["python", "onnxruntime"]\n',
        {"model.py": double_py(1.0), "model.onnx": write_double_onnx},
    )
    # A Python model that agrees with the ONNX graph serves, with the measured error noted.
    add_model(
        root,
        "agrees",
        'engine_preference: ["python", "onnxruntime"]\nwarmup { input_kind: INPUT_KIND_RANDOM batch_sizes: [1, 8] }\n',
        {"model.py": double_py(0.0), "model.onnx": write_double_onnx},
    )
    # No model.onnx: the last engine (python) is the reference; a torch model off by 0.5 is skipped.
    add_model(
        root,
        "torch_off",
        'engine_preference: ["torch", "python"]\n',
        {"model.pt": lambda p: write_double_pt(p, 0.5), "model.py": double_py(0.0)},
    )
    # Parity turned off: the first engine that loads serves, whatever it answers.
    add_model(
        root,
        "no_parity",
        'engine_preference: ["python", "onnxruntime"]\nparameters { key: "parity_reference" value: "none" }\n',
        {"model.py": double_py(1.0), "model.onnx": write_double_onnx},
    )
    # Nothing can serve: every reason ends up in the failure.
    add_model(root, "nothing", 'engine_preference: ["tensorrt", "torch"]\n', {"model.plan": "x"})
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    with ServerThread(repository) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def predict(server: ServerThread, model: str, x: np.ndarray) -> np.ndarray:
    from inferd import Client

    with Client(server.address) as client:
        return client.predict(model, {"x": x})["y"]


def version_of(stub: inference_pb2_grpc.InferenceServiceStub, model: str) -> inference_pb2.VersionStatus:
    meta = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name=model))
    (version,) = meta.versions
    return version


X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here: the missing-TensorRT path cannot be shown")
def test_without_tensorrt_the_next_engine_serves_and_the_reason_is_recorded(
    server: ServerThread, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    version = version_of(stub, "trt_first")
    assert version.state == inference_pb2.VERSION_STATE_READY
    assert version.engine == "onnxruntime"
    assert len(version.engine_notes) == 1
    assert version.engine_notes[0].startswith("tensorrt: engine 'tensorrt' needs the 'tensorrt' package")
    meta = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="trt_first"))
    assert meta.engine == "onnxruntime"
    np.testing.assert_array_equal(predict(server, "trt_first", X), X * 2)


def test_a_candidate_that_disagrees_with_the_reference_is_skipped_with_the_measured_error(
    server: ServerThread, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    version = version_of(stub, "off_by_one")
    assert version.engine == "onnxruntime"
    (note,) = version.engine_notes
    assert note.startswith("python: does not match onnxruntime on CPU on the warm-up inputs:")
    assert "output 'y': max abs error 1, max rel error" in note
    assert "12/12 elements outside atol 0.001, rtol 0.001" in note  # 1 zero row + 2 random rows
    assert "atol 0.001, rtol 0.001" in note
    np.testing.assert_array_equal(predict(server, "off_by_one", X), X * 2)


def test_a_candidate_that_agrees_serves_with_its_parity_noted(
    server: ServerThread, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    version = version_of(stub, "agrees")
    assert version.engine == "python"
    (note,) = version.engine_notes
    assert note.startswith("python: matches onnxruntime on CPU: max abs error 0 over 2 warm-up batch(es)")


def test_without_an_onnx_file_the_last_engine_is_the_reference(
    server: ServerThread, stub: inference_pb2_grpc.InferenceServiceStub
) -> None:
    version = version_of(stub, "torch_off")
    assert version.engine == "python"
    (note,) = version.engine_notes
    assert note.startswith("torch: does not match python on the warm-up inputs: output 'y': max abs error 0.5")


def test_parity_can_be_turned_off(server: ServerThread, stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    version = version_of(stub, "no_parity")
    assert version.engine == "python" and list(version.engine_notes) == []
    np.testing.assert_array_equal(predict(server, "no_parity", X), X * 2 + 1)


def test_when_no_engine_serves_every_reason_is_kept(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    version = version_of(stub, "nothing")
    assert version.state == inference_pb2.VERSION_STATE_FAILED
    assert [n.split(":")[0] for n in version.engine_notes] == ["tensorrt", "torch"]
    assert "no model.pt in version 1" in version.engine_notes[1]
    assert "tensorrt" in version.reason and "no model.pt" in version.reason


def test_statistics_say_which_engine_served(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    stats = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name="off_by_one"))
    assert [s.engine for s in stats.statistics] == ["onnxruntime"]


def test_inferd_models_shows_why_engines_were_skipped(server: ServerThread) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert inferd_main(["models", "--address", server.address]) == 0
    text = out.getvalue()
    line = next(line for line in text.splitlines() if line.startswith("off_by_one"))
    assert "onnxruntime" in line and "python: does not match onnxruntime on CPU" in line
    stats = io.StringIO()
    with redirect_stdout(stats):
        assert inferd_main(["stats", "off_by_one", "--address", server.address]) == 0
    assert "ENGINE" in stats.getvalue().splitlines()[0] and "onnxruntime" in stats.getvalue()


def test_server_metadata_reports_no_devices_without_a_gpu(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    meta = stub.ServerMetadata(inference_pb2.ServerMetadataRequest())
    assert list(meta.devices) == gpu.query_devices()  # empty here: no NVML, no CUDA


def test_skipped_engines_are_logged(repository: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    root = tmp_path / "models"
    add_model(
        root,
        "logged",
        'engine_preference: ["python", "onnxruntime"]\n',
        {"model.py": double_py(1.0), "model.onnx": write_double_onnx},
    )
    with caplog.at_level(logging.WARNING, logger="inferd.engines"), ServerThread(root):
        pass
    assert any("engine python skipped: does not match" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_auto_build_lets_tensorrt_try_model_onnx_and_still_fall_back(tmp_path: Path) -> None:
    root = tmp_path / "models"
    add_model(root, "auto", 'engine_preference: ["tensorrt", "onnxruntime"]\n', {"model.onnx": write_double_onnx})
    with (
        ServerThread(root, trt_auto_build=True, trt_cache_dir=tmp_path / "cache") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        version = version_of(inference_pb2_grpc.InferenceServiceStub(channel), "auto")
    assert version.engine == "onnxruntime"
    assert "needs the 'tensorrt' package" in version.engine_notes[0], (
        "with auto-build TensorRT gets as far as its import"
    )
    with ServerThread(root) as server, grpc.insecure_channel(server.address) as channel:
        version = version_of(inference_pb2_grpc.InferenceServiceStub(channel), "auto")
    assert version.engine_notes[0] == "tensorrt: no model.plan in version 1"


# --- the GPU memory budget ----------------------------------------------------------------------------


def test_a_gpu_load_over_the_memory_budget_is_refused_and_the_next_engine_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = add_model(
        tmp_path,
        "big",
        'engine_preference: ["tensorrt", "python"]\nparameters { key: "gpu_memory_mb" value: "3000" }\n',
        {"model.plan": "x" * 1024, "model.py": double_py(0.0)},
    )
    fake = gpu.DeviceMemory(0, "Fake GPU", total_bytes=8 << 30, free_bytes=4 << 30, compute_capability="9.0")
    monkeypatch.setattr(gpu, "device_memory", lambda index, allow_init=True: fake)
    spec = load_config(model / "config.pbtxt", model_name="big")
    slot = Slot(spec, 1, model / "1", device="cuda:0", engine_defaults={"gpu_memory_fraction": "0.8"})

    async def load() -> None:
        await slot.load()
        await slot.drain_and_close()

    asyncio.run(load())
    assert slot.backend == "python"
    note = slot.engine_notes[0]
    assert note.startswith("tensorrt: needs about 3000 MiB of GPU memory (gpu_memory_mb)")
    assert "GPU 0 (Fake GPU) has 4096 MiB of 8192 MiB in use and the budget is 80% (6554 MiB)" in note
    assert slot.state is SlotState.UNLOADED


def test_memory_estimates_and_refusals() -> None:
    budget = gpu.memory_budget({})
    assert (budget.fraction, budget.factor, budget.explicit_bytes) == (0.9, 2.0, None)
    assert gpu.estimate_model_bytes(100 << 20, budget) == 200 << 20
    assert gpu.estimate_model_bytes(100 << 20, gpu.memory_budget({"gpu_memory_mb": "50"})) == 50 << 20
    device = gpu.DeviceMemory(1, "G", total_bytes=1000 << 20, free_bytes=600 << 20)
    assert device.used_bytes == 400 << 20
    assert gpu.memory_refusal(500 << 20, device, 0.9) is None  # 400 + 500 <= 900
    refusal = gpu.memory_refusal(501 << 20, device, 0.9, how="model.plan 250 MiB × 2")
    assert refusal is not None and "needs about 501 MiB of GPU memory (model.plan 250 MiB × 2)" in refusal
    assert "GPU 1 (G) has 400 MiB of 1000 MiB in use and the budget is 90% (900 MiB)" in refusal
    for bad in ({"gpu_memory_fraction": "1.5"}, {"gpu_memory_fraction": "0"}, {"gpu_memory_factor": "-1"}):
        with pytest.raises(Exception, match="gpu_memory"):
            gpu.memory_budget(bad)


def test_admission_is_a_no_op_where_no_gpu_can_be_measured(tmp_path: Path) -> None:
    sig = Signature((TensorSig("x", "FP32", (-1, 4)),), (TensorSig("y", "FP32", (-1, 4)),))
    assert gpu.query_devices() == [] or torch.cuda.is_available()
    if not gpu.query_devices(allow_init=True):
        assert gpu.admit(LoadSpec("m", 1, tmp_path / "model.plan", sig, device="cuda:0")) is None
