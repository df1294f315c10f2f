"""The SDK is its own distribution: it installs into an empty virtual environment with only grpcio,
protobuf and numpy (and their own dependencies), and runs a prediction against a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.server_process import ServerProcess

pytestmark = pytest.mark.e2e

SDK = Path(__file__).resolve().parents[2] / "clients" / "python"
ALLOWED = {
    "inferd-client",
    "grpcio",
    "protobuf",
    "numpy",
    "typing-extensions",
    "typing_extensions",
    "pip",
    "setuptools",
}


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("sdk-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # copy the SDK so the build cannot see (or import) anything else from the repository
    source = tmp_path_factory.mktemp("sdk-src") / "python"
    shutil.copytree(SDK, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_sdk_installs_with_only_its_three_dependencies(sdk_venv: Path):
    listed = subprocess.run(
        [str(sdk_venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"inferd-client", "grpcio", "protobuf", "numpy"} <= names
    assert names <= {n.lower() for n in ALLOWED}, f"unexpected packages: {names - {n.lower() for n in ALLOWED}}"
    probe = subprocess.run(
        [
            str(sdk_venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('server'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    assert probe.stdout.strip() == "None None"


def test_sdk_in_a_bare_venv_runs_a_prediction(sdk_venv: Path, inferd_server: ServerProcess):
    script = textwrap.dedent(
        f"""
        import numpy as np
        from inferd import Client
        from inferd.errors import NotFound

        with Client("{inferd_server.address}", timeout=30) as client:
            client.wait_until_ready(30)
            result = client.predict_response("mlp_ranker", {{"features": np.ones((3, 256), dtype=np.float32)}})
            assert result.outputs["score"].shape == (3, 1), result.outputs["score"].shape
            try:
                client.predict("no_such_model", {{"x": np.ones(1, dtype=np.float32)}})
            except NotFound as exc:
                print("not found:", exc.code.name)
            print("version", result.version, "score", float(result.outputs["score"][0, 0]))
        """
    )
    done = subprocess.run(
        [str(sdk_venv / "bin" / "python"), "-c", script], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not found: NOT_FOUND" in done.stdout
    assert "version 1 score" in done.stdout
