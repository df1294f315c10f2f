"""The Go client (clients/go): `make clients-go` builds it offline in GOPATH mode from protos/ and Debian's grpc-go
(and runs the tensor helper's `go test`), and its example, run against a real server, prints one line per call
that agrees with what the server computes.

Skips when the Go toolchain is missing, unless INFERD_REQUIRE_CLIENTS=1 (CI): then it fails naming Go.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import client_examples as examples
from tests.e2e.server_process import REPO_ROOT, ServerProcess
from tests.tls_support import TlsFiles, make_tls_files

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
    examples.require_toolchain("Go", _missing_toolchain(), DEBIAN)
    # the tensor helper's tests ran and passed
    examples.build("Go", "clients-go", expect="ok  \tgithub.com/inferd/inferd/clients/go/inferd")
    return GO_OUT / "bin" / "inferd-example"


def test_go_example_against_a_real_server(go_example: Path, inferd_server: ServerProcess, example_repository: Path):
    done = examples.run_example([str(go_example)], inferd_server.address)
    out = examples.json_output(done, "Go")
    session = examples.ranker_session(example_repository)

    # unary, raw little-endian FP32 [2, 256] -> the scores onnxruntime computes in-process
    examples.assert_json_raw(out["predict raw"], session, "go-example", 2)

    # unary, typed BYTES in -> typed INT64 out: BOS, byte + 2, padding
    typed = out["predict typed"]
    assert typed["model"] == "tokenizer" and typed["shape"] == [1, 128] and typed["typed"] is True
    assert typed["first_ids"] == [1, ord("h") + 2, ord("i") + 2, 0]

    # chunked stream: 3 rows, chunk_rows 1 -> 3 messages, final once, on the last
    chunked = out["stream chunked"]
    assert chunked["messages"] == 3 and chunked["finals"] == [False, False, True]
    examples.assert_scores(session, chunked["score"], 3)

    # generative stream: a raw BYTES prompt, greedy, max_tokens 8; the same tokens as Python's stubs get
    generated = out["stream generative"]
    examples.assert_json_generation(generated, inferd_server.address, b"The ")
    assert isinstance(generated["text"], str)

    assert out["health check"] == {"service": "inferd.v1.InferenceService", "status": "SERVING"}
    assert out["health watch"] == {"service": "model/mlp_ranker", "first_status": "SERVING"}

    examples.assert_json_not_found(out["error"])


def test_go_example_exits_non_zero_when_the_server_is_unreachable(go_example: Path):
    """An unexpected result (here: nothing answers) is a non-zero exit naming the call and the status."""
    done = examples.run_example([str(go_example)], "127.0.0.1:1")
    assert done.returncode != 0
    assert "FAIL predict raw: UNAVAILABLE" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def mtls_token_server(
    example_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, TlsFiles, str]]:
    """The example models over mTLS (client certificate required) with a bearer token required."""
    import grpc

    workdir = tmp_path_factory.mktemp("go-tls")
    certs = make_tls_files(workdir / "tls")
    token, config = examples.token_auth_config(workdir, "go-example")
    args = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key), "--tls-client-ca", str(certs.ca)]
    args += ["--auth-config", str(config)]
    credentials = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    server = ServerProcess(example_repository, workdir / "server", args, credentials=credentials).wait_ready()
    yield server, certs, token
    server.terminate()


def test_go_example_over_mtls_with_a_token(go_example: Path, mtls_token_server: tuple[ServerProcess, TlsFiles, str]):
    server, certs, token = mtls_token_server
    tls = {"INFERD_TLS_CA": str(certs.ca), "INFERD_TLS_CERT": str(certs.client_cert)}
    tls["INFERD_TLS_KEY"] = str(certs.client_key)
    done = examples.run_example([str(go_example)], server.address, INFERD_TOKEN=token, **tls)
    out = examples.json_output(done, "Go")
    assert out["predict raw"]["id"] == "go-example"
    examples.assert_json_not_found(out["error"])
    # the name in the certificate, not the address dialled
    named = examples.run_example(
        [str(go_example)], server.address, INFERD_TOKEN=token, INFERD_TLS_SERVER_NAME="localhost", **tls
    )
    assert named.returncode == 0, named.stderr
    without_token = examples.run_example([str(go_example)], server.address, **tls)
    assert without_token.returncode != 0
    assert "FAIL predict raw: UNAUTHENTICATED" in without_token.stderr, without_token.stderr
    without_certificate = examples.run_example(
        [str(go_example)], server.address, INFERD_TOKEN=token, INFERD_TLS_CA=str(certs.ca)
    )
    assert without_certificate.returncode != 0
    assert "FAIL predict raw: UNAVAILABLE" in without_certificate.stderr, without_certificate.stderr
