"""What a deploy script sees from the real ``inferd`` command: exit codes and the server's reasons.

A load that ends FAILED exits 1 naming why; ``traffic`` with no flags is a usage error rather than a
silent clear; unavailable and non-generative models, a moved ModelService and unloaded labelled
versions are each explained in words; JSON output uses the proto field names.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import __version__
from tests.e2e.server_process import REPO_ROOT, ServerProcess, tool_env
from tests.support import SCALE_CONFIG, scale_model, write_model

pytestmark = pytest.mark.e2e

BROKEN_IMPORT = "raise RuntimeError('boom while importing')\n"


def inferd(command: str, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command, *args, "--address", address],
        cwd=REPO_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-outcomes-models")
    write_model(root, "good", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "two", SCALE_CONFIG + "version_policy { all {} }\n", {1: scale_model(1), 2: scale_model(2)})
    write_model(root, "broken_python", SCALE_CONFIG, {1: BROKEN_IMPORT})
    write_model(root, "corrupt_onnx", SCALE_CONFIG, {1: "this is not an onnx protobuf"}, artifact="model.onnx")
    write_model(root, "broken_config", "max_batch_size: many\n", {1: scale_model(2)})
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(repository, tmp_path_factory.mktemp("cli-outcomes-server")).wait_ready()
    yield process
    process.terminate()


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("broken_python", "boom while importing"),
        ("corrupt_onnx", "onnx"),
        ("broken_config", "max_batch_size: many"),
    ],
)
def test_load_of_a_model_that_ends_failed_exits_1_with_the_servers_reason(
    server: ServerProcess, inferd_command: str, model: str, reason: str
) -> None:
    result = inferd(inferd_command, server.address, "load", model)
    assert result.returncode == 1, result
    assert f"inferd: model '{model}'" in result.stderr
    assert "FAILED" in result.stderr
    assert reason in result.stderr.lower() or reason in result.stderr, result.stderr


def test_load_of_a_good_model_exits_0_and_prints_it_ready(server: ServerProcess, inferd_command: str) -> None:
    result = inferd(inferd_command, server.address, "load", "good")
    assert result.returncode == 0, result.stderr
    assert "READY" in result.stdout


def test_a_reload_that_fails_exits_1_while_the_old_version_keeps_serving(
    server: ServerProcess, repository: Path, inferd_command: str
) -> None:
    write_model(repository, "reloaded", SCALE_CONFIG, {1: scale_model(2)})
    assert inferd(inferd_command, server.address, "load", "reloaded").returncode == 0
    (repository / "reloaded" / "config.pbtxt").write_text("max_batch_size: lots\n")
    result = inferd(inferd_command, server.address, "load", "reloaded")
    assert result.returncode == 1
    assert "inferd: model 'reloaded' did not reload: reload failed, older versions keep serving" in result.stderr
    assert "READY" in result.stdout


def test_traffic_without_flags_is_a_usage_error_that_changes_nothing(
    server: ServerProcess, inferd_command: str
) -> None:
    assert inferd(inferd_command, server.address, "traffic", "good", "--label", "stable=1").returncode == 0
    result = inferd(inferd_command, server.address, "traffic", "good")
    assert result.returncode == 2
    assert "--clear" in result.stderr
    assert "stable" in inferd(inferd_command, server.address, "models").stdout  # the label is still there
    cleared = inferd(inferd_command, server.address, "traffic", "good", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    assert "stable" not in inferd(inferd_command, server.address, "models").stdout


def test_traffic_with_all_zero_weights_exits_1_invalid_argument(server: ServerProcess, inferd_command: str) -> None:
    result = inferd(inferd_command, server.address, "traffic", "good", "--label", "a=1", "--weight", "a=0")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "all zero" in result.stderr
    negative = inferd(inferd_command, server.address, "traffic", "good", "--label", "a=1", "--weight", "a=-1")
    assert negative.returncode == 2
    assert "negative" in negative.stderr


def test_predict_on_a_model_that_failed_prints_the_servers_reason(server: ServerProcess, inferd_command: str) -> None:
    result = inferd(inferd_command, server.address, "predict", "broken_config", "--input", "x=[[1,2,3,4]]")
    assert result.returncode == 1
    assert "model 'broken_config' is FAILED" in result.stderr
    assert "max_batch_size: many" in result.stderr
    assert "has no input" not in result.stderr


def test_generate_on_a_model_without_a_prompt_says_it_is_not_generative(
    server: ServerProcess, inferd_command: str
) -> None:
    result = inferd(inferd_command, server.address, "generate", "good", "hello")
    assert result.returncode == 1
    assert "model 'good' is not a generative model" in result.stderr
    assert "inferd predict" in result.stderr


def test_json_output_uses_the_proto_field_names(server: ServerProcess, inferd_command: str) -> None:
    assert inferd(inferd_command, server.address, "predict", "good", "--input", "x=[[1,2,3,4]]").returncode == 0
    stats = inferd(inferd_command, server.address, "stats", "good", "--json")
    assert stats.returncode == 0, stats.stderr
    assert "success_count" in json.loads(stats.stdout)[0]
    assert "successCount" not in stats.stdout
    metadata = inferd(inferd_command, server.address, "metadata", "good")
    assert metadata.returncode == 0, metadata.stderr
    described = json.loads(metadata.stdout)
    assert "max_batch_size" in described
    assert "data_type" in described["inputs"][0]


def test_unloading_the_version_a_label_points_at_warns(server: ServerProcess, inferd_command: str) -> None:
    assert inferd(inferd_command, server.address, "traffic", "two", "--label", "canary=2").returncode == 0
    result = inferd(inferd_command, server.address, "unload", "two", "--version", "2")
    assert result.returncode == 0, result.stderr
    assert "warning: label(s) canary still point at the unloaded version 2" in result.stderr
    quiet = inferd(inferd_command, server.address, "unload", "two", "--version", "1")
    assert "warning" not in quiet.stderr


def test_version_flag_prints_the_version(inferd_command: str) -> None:
    result = subprocess.run([inferd_command, "--version"], env=tool_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"inferd {__version__}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_model_control_on_the_main_port_of_a_server_with_an_admin_port_names_the_admin_port(
    repository: Path, inferd_command: str, tmp_path: Path
) -> None:
    admin_port = _free_port()
    process = ServerProcess(repository, tmp_path, ["--admin-port", str(admin_port)]).wait_ready()
    try:
        result = inferd(inferd_command, process.address, "load", "good")
        assert result.returncode == 1
        assert "ModelService is not on this port" in result.stderr
        assert "--admin-port" in result.stderr
        moved = inferd(inferd_command, f"127.0.0.1:{admin_port}", "load", "good")
        assert moved.returncode == 0, moved.stderr
    finally:
        process.terminate()
