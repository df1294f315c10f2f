"""GPU tests: each module is marked ``gpu`` and skips, with the reason printed (pytest -ra), where the
GPU, CUDA-enabled torch or TensorRT it needs is missing. ``make test-gpu`` / ``scripts/gpu_check.sh``
run them; CPU CI collects them and skips them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.gpu import cuda_reason, tensorrt_reason


def require_cuda() -> None:
    reason = cuda_reason()
    if reason is not None:
        pytest.skip(reason)


def require_tensorrt() -> None:
    reason = tensorrt_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def example_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp_ranker (ONNX), tabular_torch (TorchScript) and an mlp_ranker TorchScript twin."""
    require_cuda()
    from bench.gpu import write_torch_twin
    from examples.build import build_repository

    root = tmp_path_factory.mktemp("gpu-models")
    build_repository(root, ["mlp_ranker", "tabular_torch"])
    write_torch_twin(root / "mlp_ranker" / "1" / "model.onnx", root / "mlp_ranker" / "1" / "model.pt")
    return root
