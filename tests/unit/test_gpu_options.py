"""GPU options of the CPU-testable engines: torch (autocast, CUDA graphs, torch_compile) and onnxruntime
providers. On a host without CUDA the GPU-only options are no-ops that leave a note; tests/gpu covers
them on a GPU."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines import ort as ort_engine
from engines import pt as pt_engine
from engines.base import EngineError, LoadSpec, Signature, TensorSig
from server.models.config import load_config
from server.models.slot import Slot
from tests.support import write_model
from tests.unit.test_engine_fallback import CONFIG, write_double_onnx, write_double_pt

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..* is deprecated:DeprecationWarning")
SIG = Signature((TensorSig("x", "FP32", (-1, 4)),), (TensorSig("y", "FP32", (-1, 4)),))
X = np.arange(8, dtype=np.float32).reshape(2, 4)


def torch_spec(tmp_path: Path, **parameters: str) -> LoadSpec:
    path = tmp_path / "model.pt"
    if not path.exists():
        write_double_pt(path, 0.0)
    return LoadSpec("double", 1, path, SIG, max_batch_size=8, parameters=parameters)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU no-op path")
def test_autocast_and_cuda_graphs_are_noted_no_ops_on_cpu(tmp_path: Path) -> None:
    engine = pt_engine.load(torch_spec(tmp_path, autocast="fp16", cuda_graphs="true"))
    assert engine.notes == [
        "torch: autocast fp16 ignored on cpu: it applies on CUDA only",
        "torch: cuda_graphs ignored on cpu: CUDA graphs need a CUDA device",
    ]
    assert engine.precision == "fp32"
    out = engine.infer({"x": X})["y"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X * 2)


def test_torch_compile_runs_the_torchscript_optimiser_instead(tmp_path: Path) -> None:
    engine = pt_engine.load(torch_spec(tmp_path, torch_compile="true"))
    (note,) = engine.notes
    assert "torch.compile does not take TorchScript" in note and "optimize_for_inference" in note
    np.testing.assert_array_equal(engine.infer({"x": X})["y"], X * 2)


def test_defaults_change_nothing(tmp_path: Path) -> None:
    engine = pt_engine.load(torch_spec(tmp_path))
    assert engine.notes == [] and engine.options == pt_engine.TorchOptions()


def test_bad_torch_options_fail_the_load(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="autocast"):
        pt_engine.load(torch_spec(tmp_path, autocast="fp12"))
    with pytest.raises(EngineError, match="cuda_graphs"):
        pt_engine.load(torch_spec(tmp_path, cuda_graphs="sometimes"))


def test_options_parse() -> None:
    options = pt_engine.TorchOptions.from_parameters(
        {"autocast": "BF16", "cuda_graphs": "1", "cuda_graph_batches": "1,8", "torch_compile": "max-autotune"}
    )
    assert options == pt_engine.TorchOptions("bf16", True, "1,8", "max-autotune")
    kept, notes = options.for_device(torch.device("cuda", 0))
    assert kept is options and notes == []
    dropped, notes = options.for_device(torch.device("cpu"))
    assert dropped == pt_engine.TorchOptions(compile="max-autotune") and len(notes) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU no-op path")
def test_engine_notes_reach_the_version_status(tmp_path: Path) -> None:
    model = write_model(
        tmp_path, "double", CONFIG + 'engine: "torch"\nparameters { key: "cuda_graphs" value: "true" }\n'
    )
    (model / "1").mkdir()
    write_double_pt(model / "1" / "model.pt")
    slot = Slot(load_config(model / "config.pbtxt", model_name="double"), 1, model / "1")

    async def run() -> None:
        await slot.load()
        await slot.drain_and_close()

    asyncio.run(run())
    assert slot.backend == "torch"
    assert slot.engine_notes == ["torch: cuda_graphs ignored on cpu: CUDA graphs need a CUDA device"]


# --- onnxruntime providers ----------------------------------------------------------------------------


def onnx_spec(tmp_path: Path, device: str = "cpu", **parameters: str) -> LoadSpec:
    path = tmp_path / "model.onnx"
    if not path.exists():
        write_double_onnx(path)
    return LoadSpec("double", 1, path, SIG, max_batch_size=8, parameters=parameters, device=device)


def test_provider_aliases_and_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    spec = onnx_spec(tmp_path, providers="tensorrt, cuda ,cpu")
    assert ort_engine.choose_providers(spec) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert ort_engine.choose_providers(onnx_spec(tmp_path, device="cuda:1")) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_gpu_providers_get_the_device_id(tmp_path: Path) -> None:
    spec = onnx_spec(tmp_path, device="cuda:1")
    options = ort_engine.provider_options(
        spec, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert options == [{"device_id": "1"}, {"device_id": "1"}, {}]
    assert ort_engine.provider_options(onnx_spec(tmp_path), ["CUDAExecutionProvider"]) == [{}]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="checks the CPU fallback of a CPU-only build"
)
def test_asking_for_cuda_on_a_cpu_build_serves_on_cpu(tmp_path: Path) -> None:
    engine = ort_engine.load(onnx_spec(tmp_path, device="cuda:0", providers="cuda,cpu"))
    assert engine.providers == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(engine.infer({"x": X})["y"], X * 2)
