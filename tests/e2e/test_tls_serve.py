"""``inferd serve --tls-*`` as an operator runs it, and the ``inferd`` client commands' TLS and token flags.

The server subprocess serves mTLS with certificates made at test time; the CLI reaches it with
``--tls-ca/--tls-cert/--tls-key`` (or the ``INFERD_TLS_*`` variables) and is refused without a client
certificate; unusable TLS files stop the start with exit 2 naming the flag; ``--token`` / ``INFERD_TOKEN``
reach the server as ``authorization: Bearer`` metadata (seen by a recording server over TLS).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inferd.v1 import inference_pb2
from tests.e2e.server_process import REPO_ROOT, ServerProcess, tool_env
from tests.support import SCALE_CONFIG, scale_model, write_model
from tests.tls_support import MetadataRecorder, TlsFiles, make_tls_files, recording_tls_server

pytestmark = pytest.mark.e2e


def run_inferd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["inferd", *args], cwd=REPO_ROOT, env=tool_env(**env), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("e2e-tls"))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls-serve-models")
    write_model(root, "scale", SCALE_CONFIG, {1: scale_model(2)})
    return root


def _tls_args(certs: TlsFiles) -> list[str]:
    return ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]


@pytest.fixture(scope="module")
def mtls_server(repository: Path, certs: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    credentials = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    args = [*_tls_args(certs), "--tls-client-ca", str(certs.ca), "--admin-port", "0"]
    process = ServerProcess(repository, tmp_path_factory.mktemp("tls-serve"), args, credentials=credentials)
    yield process.wait_ready()
    assert process.terminate() == 0, process.log()[-4000:]


def test_serve_with_mtls_logs_the_mode_and_the_cli_connects_with_its_certificate(
    mtls_server: ServerProcess, certs: TlsFiles
) -> None:
    assert "transport security: mTLS required" in mtls_server.log()
    flags = ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]
    result = run_inferd("predict", "scale", "--input", "x=[[1,2,3,4]]", "--address", mtls_server.address, *flags)
    assert result.returncode == 0, result.stderr
    assert "8.0" in result.stdout  # 4 * 2
    # the same through the environment, against a name the certificate carries
    env = {"INFERD_TLS_CA": str(certs.ca), "INFERD_TLS_CERT": str(certs.client_cert)}
    env["INFERD_TLS_KEY"] = str(certs.client_key)
    address = f"localhost:{mtls_server.port}"
    assert run_inferd("health", "--address", address, **env).returncode == 0


def test_the_cli_without_a_client_certificate_or_the_ca_is_refused(mtls_server: ServerProcess, certs: TlsFiles) -> None:
    no_cert = run_inferd("health", "--address", mtls_server.address, "--tls-ca", str(certs.ca))
    assert no_cert.returncode != 0
    assert "UNAVAILABLE" in no_cert.stderr + no_cert.stdout
    plaintext = run_inferd("models", "--address", mtls_server.address)
    assert plaintext.returncode != 0
    half = run_inferd("health", "--address", mtls_server.address, "--tls-cert", str(certs.client_cert))
    assert half.returncode != 0 and "--tls-key" in half.stderr


def _serve_exit(repository: Path, workdir: Path, *args: str) -> tuple[int, str]:
    process = ServerProcess(repository, workdir, list(args))
    try:
        code = process.process.wait(120)
    finally:
        process.kill()
    return code, process.log()


@pytest.mark.parametrize(
    ("make_args", "flag"),
    [
        (lambda c, bad: ["--tls-cert", str(c.server_cert), "--tls-key", str(bad)], "--tls-key"),
        (lambda c, bad: ["--tls-cert", str(c.server_cert), "--tls-key", str(c.server2_key)], "--tls-key"),
        (lambda c, bad: ["--tls-cert", str(bad), "--tls-key", str(c.server_key)], "--tls-cert"),
        (lambda c, bad: ["--tls-cert", str(c.server_cert)], "--tls-key"),
        (lambda c, bad: ["--tls-client-ca", str(c.ca)], "--tls-cert"),
        (lambda c, bad: [*_tls_args(c), "--tls-client-auth", "require"], "--tls-client-ca"),
        (lambda c, bad: [*_tls_args(c), "--tls-client-auth", "optional"], "--tls-client-auth"),
    ],
    ids=[
        "garbage-key",
        "mismatched-key",
        "garbage-cert",
        "key-missing",
        "ca-without-cert",
        "require-no-ca",
        "optional",
    ],
)
def test_unusable_tls_flags_exit_2_naming_the_flag(
    repository: Path, certs: TlsFiles, tmp_path: Path, make_args: object, flag: str
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("this is not PEM\n")
    code, log = _serve_exit(repository, tmp_path / "server", *make_args(certs, bad))  # type: ignore[operator]
    assert code == 2, log
    assert flag in log, log


@pytest.fixture()
def recording_server(certs: TlsFiles) -> Iterator[tuple[str, MetadataRecorder]]:
    with recording_tls_server(certs) as served:
        yield served


def test_the_cli_sends_its_token_as_bearer_metadata(
    recording_server: tuple[str, MetadataRecorder], certs: TlsFiles
) -> None:
    address, recorder = recording_server
    assert inference_pb2.ListModelsResponse.FromString(b"") is not None  # the empty answer decodes
    by_flag = run_inferd("models", "--address", address, "--tls-ca", str(certs.ca), "--token", "flag-token")
    assert by_flag.returncode == 0, by_flag.stderr
    by_env = run_inferd("models", "--address", address, "--tls-ca", str(certs.ca), INFERD_TOKEN="env-token")
    assert by_env.returncode == 0, by_env.stderr
    tokens = [seen.get("authorization") for seen in recorder.seen]
    assert tokens == ["Bearer flag-token", "Bearer env-token"]
    assert "flag-token" not in by_flag.stdout + by_flag.stderr


def test_grpcurl_reaches_the_mtls_server_as_docs_security_md_shows(
    mtls_server: ServerProcess, certs: TlsFiles, grpcurl: str
) -> None:
    """docs/security.md, "Clients": ``-cacert`` for the CA, ``-cert``/``-key`` for mTLS, ``-authority`` for the
    name checked in the server's certificate."""
    mtls = ["-cacert", str(certs.ca), "-cert", str(certs.client_cert), "-key", str(certs.client_key)]

    def grpcurl_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [grpcurl, *args], cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=60
        )

    listed = grpcurl_run(*mtls, mtls_server.address, "inferd.v1.InferenceService/ListModels")
    assert listed.returncode == 0 and '"scale"' in listed.stdout, listed.stderr
    named = grpcurl_run(*mtls, "-authority", "localhost", mtls_server.address, "grpc.health.v1.Health/Check")
    assert named.returncode == 0 and "SERVING" in named.stdout, named.stderr
    wrong_name = grpcurl_run(*mtls, "-authority", "inferd.example", mtls_server.address, "grpc.health.v1.Health/Check")
    assert wrong_name.returncode != 0
    no_cert = grpcurl_run("-cacert", str(certs.ca), mtls_server.address, "grpc.health.v1.Health/Check")
    assert no_cert.returncode != 0
