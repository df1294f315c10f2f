"""The peers benchmark's pure parts and its guard: the one pre-encoded request is valid OIP (a real inferd
answers it like onnxruntime), a wrong answer or an error is caught before anything is measured, and the
report's ratios are medians of per-round ratios within one pattern. The peers themselves are far too big
for CI: ``INFERD_BENCH_PEERS=1`` runs the smoke test against the peer venvs under .cache/peers/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from bench.peers import oip_wire, report, servers, venvs
from examples.build import build_repository
from inferd.oip.v2 import grpc_service_pb2 as pb
from tests.support import ServerThread

X = np.random.default_rng(0).random((1, 256), dtype=np.float32)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, np.ndarray]]:
    """A real inferd serving the bench's MLP, and onnxruntime's answer for X."""
    root = tmp_path_factory.mktemp("repo")
    build_repository(root, ["mlp_ranker"])
    expected = ort.InferenceSession(str(root / "mlp_ranker" / "1" / "model.onnx")).run(["score"], {"features": X})[0]
    with ServerThread(root) as server:
        yield server.address, np.asarray(expected)


def test_the_pre_encoded_request_is_valid_oip_and_a_real_server_answers_it_like_onnxruntime(
    mlp: tuple[str, np.ndarray],
) -> None:
    address, expected = mlp
    request = oip_wire.infer_request("mlp_ranker", "features", X)
    parsed = pb.ModelInferRequest.FromString(request.SerializeToString())
    assert (parsed.model_name, parsed.inputs[0].name, parsed.inputs[0].datatype) == ("mlp_ranker", "features", "FP32")
    assert list(parsed.inputs[0].shape) == [1, 256] and parsed.raw_input_contents[0] == X.astype("<f4").tobytes()
    oip_wire.wait_ready(address, ["mlp_ranker"], timeout=30)
    before = oip_wire.counters(address, "mlp_ranker")
    oip_wire.check(address, request, "score", expected)
    after = oip_wire.counters(address, "mlp_ranker")
    assert before is not None and after is not None
    assert after.inference_count == before.inference_count + 1 and after.execution_count >= before.execution_count + 1


def test_a_wrong_answer_or_an_error_is_caught_before_measuring(mlp: tuple[str, np.ndarray]) -> None:
    address, expected = mlp
    with pytest.raises(oip_wire.WrongAnswer, match="differs from onnxruntime"):
        oip_wire.check(address, oip_wire.infer_request("mlp_ranker", "features", X), "score", expected + 1e-3)
    with pytest.raises(oip_wire.WrongAnswer, match="NOT_FOUND"):
        oip_wire.check(address, oip_wire.infer_request("no_such_model", "features", X), "score", expected)
    with pytest.raises(oip_wire.WrongAnswer, match="INVALID_ARGUMENT"):
        oip_wire.check(address, oip_wire.infer_request("mlp_ranker", "wrong_input", X), "score", expected)
    with pytest.raises(RuntimeError, match="not ready"):
        oip_wire.wait_ready(address, ["no_such_model"], timeout=0.5)


def test_outputs_are_read_raw_or_typed() -> None:
    y = np.array([[0.5], [-1.25]], dtype=np.float32)
    raw = pb.ModelInferResponse()
    raw.outputs.add(name="score", datatype="FP32", shape=[2, 1])
    raw.raw_output_contents.append(y.tobytes())
    typed = pb.ModelInferResponse()
    typed.outputs.add(name="other", datatype="INT64", shape=[1]).contents.int64_contents.append(7)
    typed.outputs.add(name="score", datatype="FP32", shape=[2, 1]).contents.fp32_contents.extend([0.5, -1.25])
    for response in (raw, typed):
        np.testing.assert_array_equal(oip_wire.output_array(response, "score"), y)
    with pytest.raises(ValueError, match="no output 'logits'"):
        oip_wire.output_array(typed, "logits")


def _point(rounds: list[float], p99: float, rows: float | None = None) -> dict[str, Any]:
    return report.median(
        [{"req_per_s": r, "p50_ms": 1.0, "p99_ms": p99, "errors": 0, "rows_per_call": rows} for r in rounds]
    )


def test_ratios_are_medians_of_per_round_ratios_within_a_pattern() -> None:
    cell = {
        "floor": _point([6000, 7000, 5000], 2.0),
        "inferd_on": _point([5400, 5600, 4600], 4.0, rows=3.0),  # per round: 0.90, 0.80, 0.92
        "inferd_off": _point([5000, 5000, 5000], 5.0),
        "triton_on": _point([10800, 11200, 9200], 3.0, rows=17.0),
        "kserve": _point([2000, 2000, 2000], 20.0),
        "mlserver": _point([2500, 2500, 2500], 10.0),
    }
    ratios = report.ratios({"mlp": {"many": {"32": cell}, "one": {"32": cell}}})
    got = ratios["mlp"]["many"]["32"]
    assert got["inferd_on / floor"] == pytest.approx(0.90)
    assert got["inferd_on / triton_on"] == pytest.approx(0.5)
    assert got["inferd_on / kserve"] == pytest.approx(2.7)
    assert got["best inferd / best Python peer"] == pytest.approx(5400 / 2500)  # inferd_on vs MLServer
    assert got["best inferd p99 / best Python peer p99"] == pytest.approx(0.4)
    assert cell["inferd_on"]["rows_per_call"] == 3.0 and cell["kserve"]["rows_per_call"] is None
    text = "\n".join(report.lines({"cells": {"mlp": {"many": {"32": cell}}}, "ratios": ratios, "targets": {}}))
    assert "inferd_on / floor: **0.90**× the gRPC floor; target ≥ 0.85 (met)" in text
    assert "best inferd / best Python peer: **2.16**× the best Python peer (req/s); target ≥ 1.6 (met)" in text
    assert "| 32 conns × 1 stream | 32 | triton_on | 10800 | 1.00 | 3.00 | 0 | 17.0 |" in text
    assert "| 32 conns × 1 stream | 32 | kserve | 2000 | 1.00 | 20.00 | 0 | - |" in text


def test_a_peer_that_could_not_run_is_reported_with_its_reason() -> None:
    results = {"cells": {}, "ratios": {}, "targets": {}, "skipped": {"triton": "RuntimeError: exited while loading"}}
    assert "- **triton not measured**: RuntimeError: exited while loading" in report.lines(results)


@pytest.mark.skipif(os.environ.get("INFERD_BENCH_PEERS") != "1", reason="set INFERD_BENCH_PEERS=1 (peer venvs)")
@pytest.mark.parametrize("peer", sorted(servers.PEERS))
def test_smoke_a_peer_serves_the_bench_model_like_onnxruntime(peer: str, tmp_path: Path) -> None:
    import subprocess

    if not venvs.is_ready(peer):
        pytest.skip(f"no venv for {peer} under .cache/peers (python -m bench.run --scenario peers creates it)")
    onnx_repo = tmp_path / "repo"
    build_repository(onnx_repo, ["mlp_ranker"])
    (onnx_repo / "mlp_off" / "1").mkdir(parents=True)
    (onnx_repo / "mlp_ranker" / "1" / "model.onnx").rename(onnx_repo / "mlp_off" / "1" / "model.onnx")
    server = servers.PEERS[peer](onnx_repo, tmp_path, 18950, models=("mlp",))
    expected = ort.InferenceSession(str(onnx_repo / "mlp_off" / "1" / "model.onnx")).run(["score"], {"features": X})[0]
    with (tmp_path / "peer.log").open("wb") as log:
        process = subprocess.Popen(server.command, env=server.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            names = sorted({name for served in server.served.values() for name in served.values()})
            oip_wire.wait_ready(server.address, names, timeout=180, alive=lambda: process.poll() is None)
            for name in names:
                oip_wire.check(server.address, oip_wire.infer_request(name, "features", X), "score", expected)
        finally:
            process.terminate()
            process.wait(30)


def test_a_peer_venv_is_reused_only_while_its_pinned_requirements_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(venvs, "CACHE", tmp_path)
    assert not venvs.is_ready("kserve")  # nothing there: ensure() would create it
    (tmp_path / "kserve" / "bin").mkdir(parents=True)
    (tmp_path / "kserve" / "bin" / "python").touch()
    stamp = tmp_path / "kserve" / venvs.STAMP
    stamp.write_text(venvs.requirements("kserve").read_text())
    assert venvs.is_ready("kserve")
    stamp.write_text("kserve==0.0.1\n")  # installed from other pins: ensure() reinstalls
    assert not venvs.is_ready("kserve")
    for name in servers.PEERS:  # every peer pins what it was tested with
        pins = [line for line in venvs.requirements(name).read_text().splitlines() if not line.startswith("#")]
        assert pins and all("==" in line for line in pins)
