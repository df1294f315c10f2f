"""Another language: the Node.js example (clients/node) talks to a real server and gets the same score
as onnxruntime in-process — over plaintext, and over TLS with a bearer token (INFERD_TLS_CA, INFERD_TOKEN)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.server_process import ServerProcess
from tests.tls_support import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"


@pytest.fixture(scope="module")
def node_client() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed: the Node.js example cannot run here")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return NODE_CLIENT


def _run_example(node_client: Path, address: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INFERD_")} | env
    return subprocess.run(
        ["node", "predict.js", address], cwd=node_client, capture_output=True, text=True, timeout=60, env=environment
    )


def _check_output(done: subprocess.CompletedProcess[str], example_repository: Path) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "mlp_ranker" in out["models"]
    assert out["model"] == "mlp_ranker" and out["version"] == 1 and out["id"] == "node-example"
    assert out["score"]["shape"] == [2, 1] and out["score"]["data_type"] == "DATA_TYPE_FP32"
    import onnxruntime as ort

    features = (np.arange(2 * 256) % 7 / 7).astype(np.float32).reshape(2, 256)
    session = ort.InferenceSession(str(example_repository / "mlp_ranker" / "1" / "model.onnx"))
    (expected,) = session.run(["score"], {"features": features})
    np.testing.assert_allclose(np.array(out["score"]["values"], dtype=np.float32), expected.ravel(), rtol=1e-6)
    assert out["not_found"]["code"] == "NOT_FOUND"
    assert "model 'no_such_model' not found" in out["not_found"]["details"]


def test_node_client_predicts_with_raw_tensors_and_sees_typed_errors(
    node_client: Path, inferd_server: ServerProcess, example_repository: Path
):
    _check_output(_run_example(node_client, inferd_server.address), example_repository)


@pytest.fixture(scope="module")
def secured_server(
    example_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, TlsFiles, str]]:
    """The example models over TLS, with a bearer token required (``inferd token new`` + --auth-config)."""
    import grpc

    from server.security.tokens import hash_token, new_token

    workdir = tmp_path_factory.mktemp("node-tls")
    certs = make_tls_files(workdir / "tls")
    token = new_token()
    config = workdir / "auth.yaml"
    config.write_text(
        "tokens:\n"
        f'  - {{principal: node-example, hash: "{hash_token(token)}", roles: [caller]}}\n'
        "roles:\n"
        '  caller: {predict: ["*"], read: ["*"]}\n'
    )
    args = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key), "--auth-config", str(config)]
    credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes())
    server = ServerProcess(example_repository, workdir / "server", args, credentials=credentials).wait_ready()
    yield server, certs, token
    server.terminate()


def test_node_client_over_tls_with_a_token(
    node_client: Path, secured_server: tuple[ServerProcess, TlsFiles, str], example_repository: Path
):
    server, certs, token = secured_server
    secured = {"INFERD_TLS_CA": str(certs.ca), "INFERD_TOKEN": token}
    _check_output(_run_example(node_client, server.address, **secured), example_repository)
    # the name in the certificate, not the address dialled
    named = _run_example(node_client, server.address, INFERD_TLS_SERVER_NAME="localhost", **secured)
    _check_output(named, example_repository)
    without_token = _run_example(node_client, server.address, INFERD_TLS_CA=str(certs.ca))
    assert without_token.returncode != 0 and "UNAUTHENTICATED" in without_token.stderr
    plaintext = _run_example(node_client, server.address, INFERD_TOKEN=token)
    assert plaintext.returncode != 0 and "UNAVAILABLE" in plaintext.stderr
