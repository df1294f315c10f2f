"""End-to-end fixtures: the example repository, built once, and one subprocess server per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# the client examples' shared assertions get pytest's detailed failure output
pytest.register_assert_rewrite("tests.e2e.client_examples")

from tests.e2e.server_process import ServerProcess, find_tool  # noqa: E402


@pytest.fixture(scope="session")
def example_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models (mlp_ranker, text_encoder, tabular_torch, tokenizer), built from code once."""
    from examples.build import build_repository

    root = tmp_path_factory.mktemp("e2e-models")
    build_repository(root)
    return root


@pytest.fixture(scope="session")
def inferd_server(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(example_repository, tmp_path_factory.mktemp("e2e-server")).wait_ready()
    yield server
    code = server.terminate()
    assert code == 0, f"the server exited with {code} after SIGTERM\n{server.log()[-4000:]}"


@pytest.fixture(scope="session")
def grpcurl() -> str:
    return find_tool("grpcurl")


@pytest.fixture(scope="session")
def inferd_command() -> str:
    return find_tool("inferd")
