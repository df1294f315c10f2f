"""TensorRT: build a plan, check its metadata, run it against ONNX Runtime on CPU, refuse a foreign plan,
auto-build into the cache and reuse it, CUDA graphs, and serving through the fallback chain."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.gpu import example_input
from engines.base import EngineError, LoadSpec
from engines.plan_meta import metadata_path, read_metadata
from server.models.config import load_config
from tests.gpu.conftest import require_tensorrt

pytestmark = pytest.mark.gpu
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tensorrt() -> None:
    require_tensorrt()


def spec(repo: Path, artifact: str, **parameters: str) -> LoadSpec:
    config = load_config(repo / "mlp_ranker" / "config.pbtxt", model_name="mlp_ranker")
    return LoadSpec(
        "mlp_ranker",
        1,
        repo / "mlp_ranker" / "1" / artifact,
        config.signature,
        config.max_batch_size,
        parameters,
        device="cuda:0",
    )


@pytest.fixture(scope="module")
def reference(example_repository: Path):  # type: ignore[no-untyped-def]
    from engines import ort as ort_engine

    return ort_engine.load(dataclasses.replace(spec(example_repository, "model.onnx", providers="cpu"), device="cpu"))


@pytest.fixture(scope="module")
def fp32_plan(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plan")
    shutil.copytree(example_repository / "mlp_ranker", folder / "mlp_ranker")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "build",
            str(folder / "mlp_ranker"),
            "--precision",
            "fp32",
            "--timing-cache",
            str(folder / "timing.cache"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[" in result.stdout and "s]" in result.stdout, "the build shows progress with elapsed time"
    return folder / "mlp_ranker" / "1" / "model.plan"


def test_inferd_build_writes_a_plan_with_metadata(fp32_plan: Path) -> None:
    import tensorrt
    import torch

    meta = read_metadata(fp32_plan)
    assert meta is not None and fp32_plan.stat().st_size > 0
    assert meta.tensorrt_version == tensorrt.__version__
    assert meta.gpu_name == torch.cuda.get_device_name(0)
    assert meta.precision == "fp32" and meta.build_seconds > 0 and len(meta.onnx_sha256) == 64
    assert meta.profiles[0].batch_range() == (1, 64)
    assert (fp32_plan.parent.parent.parent / "timing.cache").stat().st_size > 0


def test_the_plan_matches_onnxruntime_on_cpu(fp32_plan: Path, reference) -> None:  # type: ignore[no-untyped-def]
    from engines import trt

    engine = trt.load(spec(fp32_plan.parent.parent.parent, "model.plan"))
    try:
        for rows in (1, 7, 64):
            inputs = example_input("mlp_ranker", rows, seed=rows)
            np.testing.assert_allclose(
                engine.infer(inputs)["score"], reference.infer(inputs)["score"], atol=1e-3, rtol=1e-3
            )
    finally:
        engine.close()


def test_cuda_graphs_match_the_plain_context(fp32_plan: Path, reference) -> None:  # type: ignore[no-untyped-def]
    from engines import trt

    engine = trt.load(spec(fp32_plan.parent.parent.parent, "model.plan", cuda_graphs="true"))
    try:
        assert engine.buckets == [1, 2, 4, 8, 16, 32, 64]
        for rows in (1, 5, 64):
            inputs = example_input("mlp_ranker", rows, seed=rows)
            np.testing.assert_allclose(
                engine.infer(inputs)["score"], reference.infer(inputs)["score"], atol=1e-3, rtol=1e-3
            )
    finally:
        engine.close()


def test_a_plan_for_another_gpu_is_refused(fp32_plan: Path, tmp_path: Path) -> None:
    from engines import trt

    folder = tmp_path / "mlp_ranker"
    shutil.copytree(fp32_plan.parent.parent, folder)
    meta_file = metadata_path(folder / "1" / "model.plan")
    data = json.loads(meta_file.read_text())
    data["compute_capability"], data["gpu_name"] = "1.0", "Imaginary GPU"
    meta_file.write_text(json.dumps(data))
    with pytest.raises(EngineError, match=r"compute capability 1\.0 \(Imaginary GPU\)"):
        trt.load(spec(tmp_path, "model.plan"))
    engine = trt.load(
        spec(tmp_path, "model.plan", trt_auto_build="true", trt_cache_dir=str(tmp_path / "cache"), trt_precision="fp32")
    )
    assert engine.plan_path.parent == tmp_path / "cache" and "refused" in engine.notes[0]
    engine.close()
    again = trt.load(
        spec(tmp_path, "model.plan", trt_auto_build="true", trt_cache_dir=str(tmp_path / "cache"), trt_precision="fp32")
    )
    assert any(n.startswith("using the cached plan") for n in again.notes), again.notes
    again.close()


def test_fallback_chain_serves_an_auto_built_fp16_plan(example_repository: Path, tmp_path: Path) -> None:
    from inferd import Client
    from tests.support import ServerThread

    model = tmp_path / "models" / "mlp_ranker"
    shutil.copytree(example_repository / "mlp_ranker", model)
    (model / "1" / "model.pt").unlink(missing_ok=True)
    text = (
        (model / "config.pbtxt")
        .read_text()
        .replace('engine: "onnxruntime"', 'engine_preference: ["tensorrt", "onnxruntime"]')
    )
    (model / "config.pbtxt").write_text(text + 'parameters { key: "trt_precision" value: "fp16" }\n')
    with (
        ServerThread(tmp_path / "models", trt_auto_build=True, trt_cache_dir=tmp_path / "cache") as server,
        Client(server.address) as client,
    ):
        (status,) = client.list_models()
        version = status.versions[0]
        assert version.engine == "tensorrt", list(version.engine_notes)
        assert any("matches onnxruntime on CPU" in n for n in version.engine_notes)
        assert client.predict("mlp_ranker", example_input("mlp_ranker", 8))["score"].shape == (8, 1)
