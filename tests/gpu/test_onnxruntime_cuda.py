"""onnxruntime with the CUDA execution provider (needs onnxruntime-gpu)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.gpu import example_input
from engines import ort as ort_engine
from engines.base import LoadSpec
from server.models.config import load_config
from tests.gpu.conftest import require_cuda

pytestmark = pytest.mark.gpu


def spec(repo: Path, **parameters: str) -> LoadSpec:
    config = load_config(repo / "mlp_ranker" / "config.pbtxt", model_name="mlp_ranker")
    return LoadSpec(
        "mlp_ranker",
        1,
        repo / "mlp_ranker" / "1" / "model.onnx",
        config.signature,
        config.max_batch_size,
        parameters,
        device="cuda:0",
    )


def test_the_cuda_provider_matches_the_cpu_provider(example_repository: Path) -> None:
    require_cuda()
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip(f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)")
    gpu = ort_engine.load(spec(example_repository, providers="cuda,cpu"))
    cpu = ort_engine.load(spec(example_repository, providers="cpu"))
    assert gpu.providers[0] == "CUDAExecutionProvider"
    for rows in (1, 64):
        inputs = example_input("mlp_ranker", rows)
        np.testing.assert_allclose(gpu.infer(inputs)["score"], cpu.infer(inputs)["score"], atol=1e-4, rtol=1e-3)
