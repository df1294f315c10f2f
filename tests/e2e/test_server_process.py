"""The ``inferd`` process as operators meet it: a busy port, the client commands, SIGTERM drain."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from examples.build import build_repository
from inferd import Client
from server.app import InferdServer
from server.cli.main import build_parser
from server.cli.serve import server_options
from server.models.slot import DEFAULT_DRAIN_TIMEOUT_S
from tests.e2e.server_process import REPO_ROOT, ServerProcess, health_status, tool_env
from tests.support import eventually

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ENGINES = {
    "mlp_ranker": "onnxruntime",
    "text_encoder": "onnxruntime",
    "tabular_torch": "torch",
    "tokenizer": "python",
}


def run_cli(inferd_command: str, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([inferd_command, *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=120)


def test_second_server_on_a_busy_port_exits_nonzero_naming_the_port(
    inferd_server: ServerProcess, example_repository: Path
) -> None:
    port = str(inferd_server.port)
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--repository", str(example_repository), "--port", port],
        cwd=REPO_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.startswith("inferd:")]
    assert message, result.stderr
    assert f"127.0.0.1:{port}" in message[0]
    assert "is another server using the port?" in message[0]
    assert health_status(inferd_server.address) == SERVING  # the first server is untouched


def test_inferd_models_lists_every_example_model_ready_on_its_engine(
    inferd_server: ServerProcess, inferd_command: str
) -> None:
    result = run_cli(inferd_command, "models", "--address", inferd_server.address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == [
        "MODEL",
        "VERSION",
        "STATE",
        "ENGINE",
        "LABELS",
        "REASON",
    ]
    for model, engine in ENGINES.items():
        assert re.search(rf"^{model}\s+1\s+READY\s+{engine}\b", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_inferd_predict_from_an_npy_file_matches_the_torchscript_model(
    inferd_server: ServerProcess, inferd_command: str, example_repository: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    features = np.random.default_rng(3).standard_normal((5, 16)).astype(np.float32)
    np.save(tmp_path / "features.npy", features)
    result = run_cli(
        inferd_command,
        "predict",
        "tabular_torch",
        "--input",
        "features=features.npy",
        "--save",
        "out",
        "--address",
        inferd_server.address,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert (reply["model"], reply["version"]) == ("tabular_torch", 1)
    probabilities = reply["outputs"]["probabilities"]
    assert (probabilities["shape"], probabilities["dtype"]) == ([5, 4], "float32")

    module = torch.jit.load(str(example_repository / "tabular_torch" / "1" / "model.pt"))
    with torch.inference_mode():
        expected = module(torch.from_numpy(features)).numpy()
    saved = np.load(tmp_path / "out" / "probabilities.npy")
    # The server runs torch with intra_op_threads=1, so float sums may round differently here.
    np.testing.assert_allclose(saved, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(probabilities["data"], np.float32), expected, rtol=1e-6)


def test_inferd_predict_with_a_json_bytes_input_runs_the_python_tokenizer(
    inferd_server: ServerProcess, inferd_command: str
) -> None:
    result = run_cli(
        inferd_command,
        "predict",
        "tokenizer",
        "--input",
        'text=["hi", "hello"]',
        "--address",
        inferd_server.address,
    )
    assert result.returncode == 0, result.stderr
    ids = np.asarray(json.loads(result.stdout)["outputs"]["input_ids"]["data"])
    assert ids.shape == (2, 128)
    # BOS = 1, then each byte + 2, then padding 0 (examples/tokenizer_model.py).
    assert ids[0, :4].tolist() == [1, ord("h") + 2, ord("i") + 2, 0]


def test_inferd_predict_of_an_unknown_model_exits_one_with_the_status(
    inferd_server: ServerProcess, inferd_command: str
) -> None:
    result = run_cli(inferd_command, "predict", "no_such_model", "--address", inferd_server.address)
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "no_such_model" in result.stderr


def test_inferd_health_of_an_unknown_model_is_reported_and_exits_nonzero(
    inferd_server: ServerProcess, inferd_command: str
) -> None:
    result = run_cli(inferd_command, "health", "--model", "no_such_model", "--address", inferd_server.address)
    assert result.returncode == 1
    assert result.stdout.strip() == "SERVICE_UNKNOWN"


def test_sigterm_reports_not_serving_and_keeps_answering_through_the_drain_then_exits_zero(
    tmp_path: Path,
) -> None:
    drain_s = 3.0
    repository = tmp_path / "models"
    build_repository(repository, ["tokenizer"])
    server = ServerProcess(
        repository, tmp_path / "server", ["--drain-seconds", str(drain_s), "--grace-seconds", "2"]
    ).wait_ready()
    try:
        assert health_status(server.address, "model/tokenizer") == SERVING
        with Client(server.address, timeout=10) as client:
            sent = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            eventually(lambda: health_status(server.address) == NOT_SERVING, timeout=drain_s, what="NOT_SERVING")
            assert health_status(server.address, "model/tokenizer") == NOT_SERVING
            assert health_status(server.address, "inferd.v1.InferenceService") == NOT_SERVING
            # Inside the drain window the port is still open and requests are still served.
            outputs = client.predict("tokenizer", {"text": np.array([b"still here"], dtype=object)})
            assert time.monotonic() - sent < drain_s
            assert outputs["input_ids"].shape == (1, 128)
        assert server.process.wait(drain_s + 30) == 0
        assert time.monotonic() - sent >= drain_s * 0.9
    finally:
        server.terminate()


def test_unload_drain_seconds_reaches_the_model_manager_with_the_servers_default(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    default = server_options(parse(["serve", "--repository", str(tmp_path)]))
    assert default.unload_drain_seconds == DEFAULT_DRAIN_TIMEOUT_S
    options = server_options(parse(["serve", "--repository", str(tmp_path), "--unload-drain-seconds", "2.5"]))
    assert InferdServer(options).manager.drain_timeout_s == 2.5
