"""The C++ client (clients/cpp): `make clients-cpp` builds it offline with Debian's grpc++ from protos/, and its
example, run against a real server, prints one line per call that agrees with what the server computes.

Skips when the C++ toolchain is missing, unless INFERD_REQUIRE_CLIENTS=1 (CI): then it fails naming C++.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e import client_examples as examples
from tests.e2e.server_process import REPO_ROOT, ServerProcess
from tests.tls_support import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e

CPP_OUT = REPO_ROOT / ".cache" / "clients" / "cpp"
DEBIAN = "Debian: g++ make pkg-config libgrpc++-dev protobuf-compiler-grpc"
TOOLS = ("make", "g++", "protoc", "grpc_cpp_plugin", "pkg-config")
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _missing_toolchain() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    found = subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"], capture_output=True)
    if found.returncode != 0:
        return "pkg-config finds no grpc++/protobuf (libgrpc++-dev)"
    return None


@pytest.fixture(scope="module")
def cpp_example() -> Path:
    examples.require_toolchain("C++", _missing_toolchain(), DEBIAN)
    done = examples.build("C++", "clients-cpp")
    assert "tensor helper self-check ok" in done.stdout or (CPP_OUT / "selfcheck.ok").is_file()
    return CPP_OUT / "example"


def _parse(stdout: str) -> dict[str, dict[str, str]]:
    """Each line is `<call> key=value ...` (values with spaces in double quotes): {call: {key: value}}."""
    lines: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        call, _, rest = line.partition(" ")
        lines[call] = {key: value for key, value in FIELD.findall(rest)}
    return lines


def _floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split(",")], dtype=np.float32)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


def _run_example(cpp_example: Path, address: str, **env: str) -> subprocess.CompletedProcess[str]:
    return examples.run_example([str(cpp_example)], address, **env)


def test_cpp_example_against_a_real_server(cpp_example: Path, inferd_server: ServerProcess, example_repository: Path):
    done = _run_example(cpp_example, inferd_server.address)
    assert done.returncode == 0, f"C++ example failed\n{done.stdout}\n{done.stderr}"
    out = _parse(done.stdout)
    assert list(out) == [
        "predict_raw",
        "predict_typed",
        "stream_chunked",
        "stream_generate",
        "health_check",
        "health_watch",
        "error",
        "ok",
    ], done.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(example_repository / "mlp_ranker" / "1" / "model.onnx"))

    # unary, raw little-endian FP32 [1, 256] -> the score onnxruntime computes in-process
    raw = out["predict_raw"]
    assert raw["model"] == "mlp_ranker" and raw["version"] == "1" and raw["id"] == "cpp-example"
    assert raw["shape"] == "[1,1]"
    examples.assert_scores(session, _floats(raw["score"]), 1)

    # unary, typed BYTES in -> typed INT64 out: BOS, byte + 2, padding
    typed = out["predict_typed"]
    assert typed["model"] == "tokenizer" and typed["shape"] == "[2,128]" and typed["field"] == "int64_contents"
    assert _ints(typed["row0"]) == [1, ord("h") + 2, ord("i") + 2, 0, 0]
    assert _ints(typed["row1"]) == [1, ord("a") + 2, ord("b") + 2, ord("c") + 2, 0]

    # chunked stream: 3 rows, chunk_rows 1 -> messages 0, 1, 2 of one row each, final once, on the last
    chunked = out["stream_chunked"]
    assert chunked["messages"] == "3" and chunked["sequence"] == "0,1,2" and chunked["rows"] == "1,1,1"
    assert chunked["final_count"] == "1" and chunked["final_last"] == "true"
    examples.assert_scores(session, _floats(chunked["scores"]), 3)

    # generative stream: a raw BYTES prompt, greedy; the same tokens as Python's stubs with a typed prompt
    generated = out["stream_generate"]
    tokens = _ints(generated["token_ids"])
    assert 1 <= len(tokens) <= 8 and generated["tokens"] == str(len(tokens))
    assert generated["final_count"] == "1" and generated["final_last"] == "true"
    assert generated["finish_reason"] in {"length", "eos", "stop"}
    assert tokens == examples.greedy_tokens(inferd_server.address, b"The lighthouse", 8)
    assert generated["text"].startswith('"') and generated["text"].endswith('"')

    assert out["health_check"] == {"service": '""', "status": "SERVING"}
    assert out["health_watch"] == {"service": "model/mlp_ranker", "first": "SERVING"}

    error = out["error"]
    assert error["code"] == "NOT_FOUND"
    assert "(5)" in done.stdout.splitlines()[6]
    assert "model 'no_such_model' not found" in error["message"]


def test_cpp_example_exits_non_zero_when_the_server_is_unreachable(cpp_example: Path):
    """An unexpected result (here: nothing answers) is a non-zero exit with the call and status on stderr."""
    done = _run_example(cpp_example, "127.0.0.1:1")
    assert done.returncode != 0
    assert "FAIL predict_raw: UNAVAILABLE" in done.stderr


@pytest.fixture(scope="module")
def mtls_token_server(
    example_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, TlsFiles, str]]:
    """The example models over mTLS (client certificate required) with a bearer token required."""
    import grpc

    workdir = tmp_path_factory.mktemp("cpp-tls")
    certs = make_tls_files(workdir / "tls")
    token, config = examples.token_auth_config(workdir, "cpp-example")
    args = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key), "--tls-client-ca", str(certs.ca)]
    args += ["--auth-config", str(config)]
    credentials = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    server = ServerProcess(example_repository, workdir / "server", args, credentials=credentials).wait_ready()
    yield server, certs, token
    server.terminate()


def test_cpp_example_over_mtls_with_a_token(cpp_example: Path, mtls_token_server: tuple[ServerProcess, TlsFiles, str]):
    server, certs, token = mtls_token_server
    tls = {"INFERD_TLS_CA": str(certs.ca), "INFERD_TLS_CERT": str(certs.client_cert)}
    tls["INFERD_TLS_KEY"] = str(certs.client_key)
    done = _run_example(cpp_example, server.address, INFERD_TOKEN=token, **tls)
    assert done.returncode == 0, f"C++ example over mTLS failed\n{done.stdout}\n{done.stderr}"
    assert done.stdout.splitlines()[-1] == "ok"
    # the name in the certificate, not the address dialled
    named = _run_example(cpp_example, server.address, INFERD_TOKEN=token, INFERD_TLS_SERVER_NAME="localhost", **tls)
    assert named.returncode == 0, named.stderr
    without_token = _run_example(cpp_example, server.address, **tls)
    assert without_token.returncode != 0 and "FAIL predict_raw: UNAUTHENTICATED" in without_token.stderr
    without_certificate = _run_example(cpp_example, server.address, INFERD_TOKEN=token, INFERD_TLS_CA=str(certs.ca))
    assert without_certificate.returncode != 0 and "FAIL predict_raw: UNAVAILABLE" in without_certificate.stderr
