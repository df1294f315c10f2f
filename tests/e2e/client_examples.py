"""Shared helpers for the client example e2e tests (Go, Java, C++): skip or fail on a missing toolchain, build the
client with make, write a token auth config, run the example against a server, parse its `<call>: <JSON>` lines
(Go, Java) and check them against onnxruntime in-process and what Python's stubs get."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.e2e.server_process import REPO_ROOT

if TYPE_CHECKING:
    import onnxruntime


JSON_CALLS = (
    "predict raw",
    "predict typed",
    "stream chunked",
    "stream generative",
    "health check",
    "health watch",
    "error",
)
"""The calls the Go and Java examples print, one `<call>: <JSON>` line each, in this order."""


def require_toolchain(language: str, missing: str | None, packages: str) -> None:
    """Skip (or fail, with INFERD_REQUIRE_CLIENTS=1 as in CI) naming the language when something is `missing`."""
    if missing is None:
        return
    why = f"{language} client: {missing} ({packages})"
    if os.environ.get("INFERD_REQUIRE_CLIENTS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def build(
    language: str, make_target: str, expect: str | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`make <make_target>` in the repository root; asserts it succeeded (naming the language) and, if given, that
    its output holds `expect` (a self-check's line); prints the time it took."""
    started = time.monotonic()
    done = subprocess.run(["make", make_target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{language} client: make {make_target} failed\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    )
    print(f"{language} client: make {make_target} took {time.monotonic() - started:.1f}s")
    if expect is not None:
        assert expect in done.stdout, done.stdout
    return done


def token_auth_config(workdir: Path, principal: str) -> tuple[str, Path]:
    """A new bearer token and `workdir/auth.yaml` (for --auth-config) granting it, as `principal`, predict and read
    on every model."""
    from server.security.tokens import hash_token, new_token

    token = new_token()
    config = workdir / "auth.yaml"
    config.write_text(
        "tokens:\n"
        f'  - {{principal: {principal}, hash: "{hash_token(token)}", roles: [caller]}}\n'
        "roles:\n"
        '  caller: {predict: ["*"], read: ["*"]}\n'
    )
    return token, config


def run_example(command: list[str], address: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`command address`, with the INFERD_* variables of this environment dropped and those in `env` set."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INFERD_")} | env
    return subprocess.run([*command, address], capture_output=True, text=True, timeout=120, env=environment)


def parse_json_lines(stdout: str) -> dict[str, dict[str, Any]]:
    """Each line is `<call>: <JSON object>`: {call: object}, in the order printed."""
    lines: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        call, _, rest = line.partition(": ")
        lines[call] = json.loads(rest)
    return lines


def ranker_session(example_repository: Path) -> onnxruntime.InferenceSession:
    """An in-process onnxruntime session of the example mlp_ranker: the scores the server should return."""
    import onnxruntime as ort

    return ort.InferenceSession(str(example_repository / "mlp_ranker" / "1" / "model.onnx"))


def json_output(done: subprocess.CompletedProcess[str], language: str) -> dict[str, dict[str, Any]]:
    """The Go or Java example's lines by call, once it exited 0 having printed JSON_CALLS in that order."""
    assert done.returncode == 0, f"{language} example failed\n{done.stdout}\n{done.stderr}"
    out = parse_json_lines(done.stdout)
    assert list(out) == list(JSON_CALLS), done.stdout
    return out


def features(rows: int) -> np.ndarray:
    """The examples' FP32 [rows, 256] features: (index % 7) / 7."""
    return (np.arange(rows * 256) % 7 / 7).astype(np.float32).reshape(rows, 256)


def assert_scores(session: onnxruntime.InferenceSession, scores: Any, rows: int) -> None:
    """`scores` (a list or array of floats) are what `session` computes for `features(rows)`, to 1e-6 relative."""
    (expected,) = session.run(["score"], {"features": features(rows)})
    np.testing.assert_allclose(np.asarray(scores, dtype=np.float32), expected.ravel(), rtol=1e-6)


def assert_json_raw(raw: dict[str, Any], session: onnxruntime.InferenceSession, example_id: str, rows: int) -> None:
    """The `predict raw` line: mlp_ranker version 1 answered request `example_id` with FP32 [rows, 1] scores, the
    ones onnxruntime computes in-process for `features(rows)`."""
    assert raw["model"] == "mlp_ranker" and raw["version"] == 1 and raw["id"] == example_id, raw
    assert raw["shape"] == [rows, 1] and raw["data_type"] == "DATA_TYPE_FP32", raw
    assert_scores(session, raw["score"], rows)


def assert_json_generation(generated: dict[str, Any], address: str, prompt: bytes) -> None:
    """The `stream generative` line (greedy, max_tokens 8): tiny_lm, final, 1 to 8 tokens, a finish reason, and
    the same tokens as Python's stubs get at `address` for `prompt`."""
    assert generated["model"] == "tiny_lm" and generated["final"] is True, generated
    assert 1 <= generated["tokens"] <= 8 and len(generated["token_ids"]) == generated["tokens"], generated
    assert generated["finish_reason"] in {"length", "eos", "stop"}, generated
    expected = greedy_tokens(address, prompt, 8)
    assert generated["token_ids"] == expected, f"{generated['token_ids']} != {expected} (Python's stubs)"


def assert_json_not_found(error: dict[str, Any]) -> None:
    """The `error` line: the unknown model is NOT_FOUND (5), with the server's message."""
    assert error["code"] == "NOT_FOUND" and error["code_number"] == 5, error
    assert "model 'no_such_model' not found" in error["message"], error


def greedy_tokens(address: str, prompt: bytes, max_tokens: int) -> list[int]:
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
                    tokens += list(tensor.int64_contents) or list(np.frombuffer(tensor.raw_contents, "<i8"))
        return tokens
