"""The Go client (clients/go): `make clients-go` builds it offline in GOPATH mode from protos/ and Debian's grpc-go
(and runs the tensor helper's `go test`), and its example, run against a real server, prints one line per call
that agrees with what the server computes.

Skips when the Go toolchain is missing, unless INFERD_REQUIRE_CLIENTS=1 (CI): then it fails naming Go.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.server_process import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.e2e

GO_OUT = REPO_ROOT / ".cache" / "clients" / "go"
SYSTEM_GOPATH = Path("/usr/share/gocode/src")
DEBIAN = "Debian: golang-go protobuf-compiler golang-google-grpc-dev golang-google-protobuf-dev"


def _missing_toolchain() -> str | None:
    missing = [tool for tool in ("make", "go", "protoc") if shutil.which(tool) is None]
    missing += [p for p in ("google.golang.org/grpc", "google.golang.org/protobuf") if not (SYSTEM_GOPATH / p).is_dir()]
    return f"{', '.join(missing)} not installed" if missing else None


@pytest.fixture(scope="module")
def go_example() -> Path:
    missing = _missing_toolchain()
    if missing is not None:
        why = f"Go client: {missing} ({DEBIAN})"
        if os.environ.get("INFERD_REQUIRE_CLIENTS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    started = time.monotonic()
    done = subprocess.run(["make", "clients-go"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"Go client: make clients-go failed\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    print(f"Go client: make clients-go took {time.monotonic() - started:.1f}s")
    # the tensor helper's tests ran and passed
    assert "ok  \tgithub.com/inferd/inferd/clients/go/inferd" in done.stdout, done.stdout
    return GO_OUT / "bin" / "inferd-example"


def _run(example: Path, address: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INFERD_")}
    return subprocess.run([str(example), address], capture_output=True, text=True, timeout=120, env=environment)


def _parse(stdout: str) -> dict[str, dict[str, Any]]:
    """Each line is `<call>: <JSON object>`: {call: object}, in the order printed."""
    lines: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        call, _, rest = line.partition(": ")
        lines[call] = json.loads(rest)
    return lines


def _features(rows: int) -> np.ndarray:
    return (np.arange(rows * 256) % 7 / 7).astype(np.float32).reshape(rows, 256)


def _greedy_tokens(address: str, prompt: bytes, max_tokens: int) -> list[int]:
    """What Python's generated stubs get for the example's generative request (typed prompt, same parameters)."""
    import grpc

    from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2

    prompt_tensor = tensor_pb2.Tensor(
        name="prompt", data_type=tensor_pb2.DATA_TYPE_BYTES, shape=[1], bytes_contents=[prompt]
    )
    request = inference_pb2.PredictStreamRequest(
        model_name="tiny_lm",
        inputs=[prompt_tensor],
        parameters={"max_tokens": tensor_pb2.Parameter(int64_param=max_tokens),
                    "temperature": tensor_pb2.Parameter(double_param=0.0)},
    )  # fmt: skip
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        tokens: list[int] = []
        for message in stub.PredictStream(request, timeout=30):
            for tensor in message.outputs:
                if tensor.name == "token_ids":
                    tokens += list(tensor.int64_contents)
        return tokens


def test_go_example_against_a_real_server(go_example: Path, inferd_server: ServerProcess, example_repository: Path):
    done = _run(go_example, inferd_server.address)
    assert done.returncode == 0, f"Go example failed\n{done.stdout}\n{done.stderr}"
    out = _parse(done.stdout)
    assert list(out) == [
        "predict raw",
        "predict typed",
        "stream chunked",
        "stream generative",
        "health check",
        "health watch",
        "error",
    ], done.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(example_repository / "mlp_ranker" / "1" / "model.onnx"))

    # unary, raw little-endian FP32 [2, 256] -> the scores onnxruntime computes in-process
    raw = out["predict raw"]
    assert raw["model"] == "mlp_ranker" and raw["version"] == 1 and raw["id"] == "go-example"
    assert raw["shape"] == [2, 1] and raw["data_type"] == "DATA_TYPE_FP32"
    (expected,) = session.run(["score"], {"features": _features(2)})
    np.testing.assert_allclose(np.array(raw["score"], dtype=np.float32), expected.ravel(), rtol=1e-6)

    # unary, typed BYTES in -> typed INT64 out: BOS, byte + 2, padding
    typed = out["predict typed"]
    assert typed["model"] == "tokenizer" and typed["shape"] == [1, 128] and typed["typed"] is True
    assert typed["first_ids"] == [1, ord("h") + 2, ord("i") + 2, 0]

    # chunked stream: 3 rows, chunk_rows 1 -> 3 messages, final once, on the last
    chunked = out["stream chunked"]
    assert chunked["messages"] == 3 and chunked["finals"] == [False, False, True]
    (expected,) = session.run(["score"], {"features": _features(3)})
    np.testing.assert_allclose(np.array(chunked["score"], dtype=np.float32), expected.ravel(), rtol=1e-6)

    # generative stream: a raw BYTES prompt, greedy, max_tokens 8; the same tokens as Python's stubs get
    generated = out["stream generative"]
    assert generated["model"] == "tiny_lm" and generated["final"] is True
    assert 1 <= generated["tokens"] <= 8 and len(generated["token_ids"]) == generated["tokens"]
    assert generated["finish_reason"] in {"length", "eos", "stop"}
    assert generated["token_ids"] == _greedy_tokens(inferd_server.address, b"The ", 8)
    assert isinstance(generated["text"], str)

    assert out["health check"] == {"service": "inferd.v1.InferenceService", "status": "SERVING"}
    assert out["health watch"] == {"service": "model/mlp_ranker", "first_status": "SERVING"}

    error = out["error"]
    assert error["code"] == "NOT_FOUND" and error["code_number"] == 5
    assert "model 'no_such_model' not found" in error["message"]


def test_go_example_exits_non_zero_when_the_server_is_unreachable(go_example: Path):
    """An unexpected result (here: nothing answers) is a non-zero exit naming the call and the status."""
    done = _run(go_example, "127.0.0.1:1")
    assert done.returncode != 0
    assert "FAIL predict raw: UNAVAILABLE" in done.stderr, done.stderr
