"""torch on CUDA: parity with CPU, fp16 autocast, CUDA graphs per batch bucket, and serving with --device cuda:0."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.gpu import example_input
from engines import pt as pt_engine
from engines.base import LoadSpec
from server.models.config import load_config
from tests.gpu.conftest import require_cuda

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..* is deprecated:DeprecationWarning")]


def twin_spec(repo: Path, **changes: object) -> LoadSpec:
    config = load_config(repo / "mlp_ranker" / "config.pbtxt", model_name="mlp_ranker")
    spec = LoadSpec("mlp_ranker", 1, repo / "mlp_ranker" / "1" / "model.pt", config.signature, config.max_batch_size)
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _cuda() -> None:
    require_cuda()


def test_torch_on_cuda_matches_onnxruntime_on_cpu(example_repository: Path) -> None:
    from engines import ort as ort_engine

    config = load_config(example_repository / "mlp_ranker" / "config.pbtxt", model_name="mlp_ranker")
    reference = ort_engine.load(
        LoadSpec(
            "mlp_ranker",
            1,
            example_repository / "mlp_ranker" / "1" / "model.onnx",
            config.signature,
            config.max_batch_size,
            {"providers": "cpu"},
        )
    )
    engine = pt_engine.load(twin_spec(example_repository, device="cuda:0"))
    assert engine.device.type == "cuda"
    for rows in (1, 8, 64):
        inputs = example_input("mlp_ranker", rows, seed=rows)
        np.testing.assert_allclose(
            engine.infer(inputs)["score"], reference.infer(inputs)["score"], atol=1e-4, rtol=1e-3
        )


def test_fp16_autocast_stays_within_its_tolerance(example_repository: Path) -> None:
    fp32 = pt_engine.load(twin_spec(example_repository, device="cuda:0"))
    fp16 = pt_engine.load(twin_spec(example_repository, device="cuda:0", parameters={"autocast": "fp16"}))
    assert fp16.precision == "fp16" and fp16.notes == []
    inputs = example_input("mlp_ranker", 32)
    out = fp16.infer(inputs)["score"]
    assert out.dtype == np.float32, "autocast outputs are cast back to the declared dtype"
    np.testing.assert_allclose(out, fp32.infer(inputs)["score"], atol=1e-2, rtol=1e-2)


def test_cuda_graphs_replay_per_bucket_and_match_eager(example_repository: Path) -> None:
    eager = pt_engine.load(twin_spec(example_repository, device="cuda:0"))
    graphed = pt_engine.load(
        twin_spec(
            example_repository, device="cuda:0", parameters={"cuda_graphs": "true", "cuda_graph_batches": "1,8,64"}
        )
    )
    for rows in (1, 3, 8, 50, 64):
        inputs = example_input("mlp_ranker", rows, seed=rows)
        got = graphed.infer(inputs)["score"]
        assert got.shape == (rows, 1)
        np.testing.assert_allclose(got, eager.infer(inputs)["score"], atol=1e-5, rtol=1e-4)
    assert graphed._graphs is not None and sorted(graphed._graphs._graphs) == [1, 8, 64]


def test_a_server_on_cuda_serves_torch_after_checking_it_against_cpu(example_repository: Path, tmp_path: Path) -> None:
    import shutil

    from inferd import Client
    from tests.support import ServerThread

    model = tmp_path / "models" / "twin"
    shutil.copytree(example_repository / "mlp_ranker", model)
    (model / "1" / "model.onnx").unlink()
    text = (model / "config.pbtxt").read_text().replace('name: "mlp_ranker"', 'name: "twin"')
    text = text.replace('engine: "onnxruntime"', 'engine: "torch"')
    text = "\n".join(line for line in text.splitlines() if "intra_op_threads" not in line)
    (model / "config.pbtxt").write_text(text + '\nparameters { key: "parity_reference" value: "torch" }\n')
    with ServerThread(tmp_path / "models", device="cuda:0") as server, Client(server.address) as client:
        (status,) = [m for m in client.list_models() if m.name == "twin"]
        version = status.versions[0]
        assert version.engine == "torch", version.reason
        assert version.engine_notes[0].startswith("torch: matches torch on CPU")
        out = client.predict("twin", example_input("mlp_ranker", 4))["score"]
        assert out.shape == (4, 1)
