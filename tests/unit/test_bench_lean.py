"""The lean handler reference (bench/lean_server.py): a real process answers a real Predict over a real
channel with what onnxruntime gives directly (FP32 MLP, INT64 text encoder), a broken request is
INVALID_ARGUMENT; the batching report shows its rows and its summary line, and a round measures it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from bench.batching import LEAN_LABEL, report_lines
from bench.rows import cells, estimated_seconds
from examples.build import build_repository
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2
from tests.unit.test_bench_batching_rows import _point, _results

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lean-repo")
    build_repository(root, ["mlp_ranker", "text_encoder"])
    return root


def _serve(model: Path) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.lean_server", "--model", str(model), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until it serves, or exits (then "")
        assert line.startswith("lean server on "), f"lean server did not start: {line}{process.stdout.read()}"
        with grpc.insecure_channel(f"127.0.0.1:{int(line.split()[-1])}") as channel:
            yield inference_pb2_grpc.InferenceServiceStub(channel)
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture(scope="module")
def mlp(repository: Path) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    yield from _serve(repository / "mlp_ranker" / "1" / "model.onnx")


@pytest.fixture(scope="module")
def encoder(repository: Path) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    yield from _serve(repository / "text_encoder" / "1" / "model.onnx")


def _direct(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def _decoded(tensor: tensor_pb2.Tensor) -> np.ndarray:
    assert tensor.data_type == tensor_pb2.DATA_TYPE_FP32
    return np.frombuffer(tensor.raw_contents, dtype="<f4").reshape(tuple(tensor.shape))


def test_mlp_scores_are_onnxruntimes(repository: Path, mlp: inference_pb2_grpc.InferenceServiceStub) -> None:
    x = np.random.default_rng(1).random((3, 256), dtype=np.float32)
    reply = mlp.Predict(
        inference_pb2.PredictRequest(model_name="whatever", inputs=[from_numpy("features", x)]), timeout=30
    )
    assert (reply.model_name, reply.model_version) == ("whatever", 1)
    (score,) = reply.outputs
    assert score.name == "score" and list(score.shape) == [3, 1]
    expected = _direct(repository / "mlp_ranker" / "1" / "model.onnx", {"features": x})
    np.testing.assert_array_equal(_decoded(score), expected)


def test_int64_input_runs_the_text_encoder(repository: Path, encoder: inference_pb2_grpc.InferenceServiceStub) -> None:
    ids = np.random.default_rng(2).integers(1, 1024, size=(2, 128), dtype=np.int64)
    tensor = from_numpy("input_ids", ids)
    assert tensor.data_type == tensor_pb2.DATA_TYPE_INT64
    reply = encoder.Predict(inference_pb2.PredictRequest(model_name="enc", inputs=[tensor]), timeout=30)
    (logits,) = reply.outputs
    assert logits.name == "logits" and list(logits.shape) == [2, 8]
    expected = _direct(repository / "text_encoder" / "1" / "model.onnx", {"input_ids": ids})
    np.testing.assert_allclose(_decoded(logits), expected, rtol=1e-6)


def test_a_request_that_breaks_it_is_invalid_argument(mlp: inference_pb2_grpc.InferenceServiceStub) -> None:
    wrong = from_numpy("features", np.zeros((1, 255), dtype=np.float32))
    with pytest.raises(grpc.RpcError) as raised:
        mlp.Predict(inference_pb2.PredictRequest(model_name="m", inputs=[wrong]), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lean handler" in (raised.value.details() or "")


def _with_lean(results: dict[str, object]) -> dict[str, object]:
    lean = {1: _point(1100), 8: _point(2500), 32: _point(2800)}
    lean[1]["p50_ms"] = 1.3  # the floor's p50 is 1.0 in every cell
    return {**results, "lean": {"many": lean, "one": lean}}


def test_report_has_lean_rows_and_the_summary_line() -> None:
    meta = {"date": "d", "machine": "m", "server_cpu": 0, "client_cpu": 1}
    args = argparse.Namespace(seconds=4.0, batching_seconds=3.0, warmup=1.0, rounds=3)
    for results in (_with_lean(_results()), json.loads(json.dumps(_with_lean(_results())))):
        text = "\n".join(report_lines("batching", results, meta, args))
        # floor 3500 at c=32, 1200 at c=1; mlp_on many 3000 at c=32
        assert f"| {LEAN_LABEL} | 1 | 32 conns × 1 stream | 32 | 2800 | 2800 | 0.80 | 1.00 |" in text
        assert f"| {LEAN_LABEL} | 1 | 1 conn × 1 stream | 1 | 1100 | 1100 | 0.92 | 1.30 |" in text
        assert (
            "- lean handler: 0.80× the floor at c=32, p50 1.30× the floor's at c=1; "
            "inferd batching on / lean 1.07" in text
        )
        assert "inferd batching on / lean 0.89" in text  # one connection: mlp_on 2500 at c=32
        assert text.count(LEAN_LABEL) == 6  # every concurrency under both patterns, as the floor
    # without the lean points the report is as before
    plain = "\n".join(report_lines("batching", _results(), meta, args))
    assert LEAN_LABEL not in plain and "lean handler:" not in plain


def test_a_round_measures_the_lean_handler_right_after_the_floor_and_the_estimate_counts_it() -> None:
    got = cells(["mlp_off"], (1,), [1, 32], ("many", "one"), lean=True)
    assert got[:3] == [(1, "many", "floor", 1), (1, "many", "lean", 1), (1, "many", "mlp_off", 1)]
    assert len([c for c in got if c[2] == "lean"]) == 3
    models = ["mlp_off", "mlp_on", "encoder_off", "encoder_on"]
    plain = estimated_seconds(models, (1, 8), [1, 8, 32], ("many", "one"), 3, 3.0, 1.0)
    lean = estimated_seconds(models, (1, 8), [1, 8, 32], ("many", "one"), 3, 3.0, 1.0, lean=True)
    assert lean - plain == pytest.approx(5 * 3 * 4.1)  # 5 measured cells × 3 rounds × one more point
    assert lean < 12 * 60
