"""``inferd shadow`` turns mirroring on and off on a running server, as an operator runs it, and
``inferd stats`` shows the shadow version's agreement in its table."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import numpy as np
import pytest

from inferd import Client
from tests.e2e.server_process import REPO_ROOT, ServerProcess, find_tool, tool_env
from tests.support import SCALE_CONFIG, eventually, scale_model, write_model

pytestmark = pytest.mark.e2e

X = {"x": np.ones((1, 4), np.float32)}
CONFIG = SCALE_CONFIG + 'version_policy { all {} }\nversion_labels { key: "stable" value: 1 }\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("shadow-repo")
    write_model(
        root, "m", CONFIG + 'version_labels { key: "canary" value: 2 }\n', {1: scale_model(1), 2: scale_model(1.5)}
    )
    process = ServerProcess(root, tmp_path_factory.mktemp("shadow-server")).wait_ready()
    yield process
    code = process.terminate()
    assert code == 0, process.log()[-4000:]


def inferd(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [find_tool("inferd"), *args, "--address", server.address]
    return subprocess.run(command, cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=60)


def mirrored(client: Client) -> int:
    (stats,) = client.statistics("m", 2)
    return sum(c.compared + c.dropped for c in stats.shadow)


def test_shadow_on_and_off_from_the_cli_and_agreement_in_stats(server: ServerProcess) -> None:
    with Client(server.address, timeout=10) as client:
        on = inferd(server, "shadow", "m", "--label", "canary", "--fraction", "1")
        assert on.returncode == 0, on.stderr
        assert "shadow: label canary, fraction 1" in on.stdout
        for _ in range(10):
            client.predict("m", X)
        eventually(lambda: mirrored(client) == 10, what="10 mirrored requests")

        table = inferd(server, "stats", "m")
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        assert "SHADOW AGREEMENT" in header
        (row,) = [r for r in rows if r.split()[:2] == ["m", "2"]]
        assert "vs v1 y: 10 compared, argmax 100.0%, mean|diff| 0.5" in row
        assert "workers:" not in table.stdout  # one process: no worker coverage line

        off = inferd(server, "shadow", "m", "--off")
        assert off.returncode == 0, off.stderr
        assert "shadow:" not in off.stdout
        for _ in range(10):
            client.predict("m", X)
        (primary,) = client.statistics("m", 1)
        assert primary.success_count == 20  # turning the shadow on and off reset nothing
        assert mirrored(client) == 10


def test_shadow_mistakes_exit_non_zero_with_the_reason(server: ServerProcess) -> None:
    itself = inferd(server, "shadow", "m", "--label", "stable", "--fraction", "0.5")
    assert itself.returncode == 1
    assert "cannot shadow itself" in itself.stderr
    absent = inferd(server, "shadow", "m", "--version", "9", "--fraction", "0.5")
    assert absent.returncode == 1 and "shadow version 9 of model 'm' is not loaded" in absent.stderr
    no_fraction = inferd(server, "shadow", "m", "--label", "canary")
    assert no_fraction.returncode == 2 and "--fraction" in no_fraction.stderr
    no_target = inferd(server, "shadow", "m", "--fraction", "0.5")
    assert no_target.returncode == 2 and "one of the arguments --label --version --off is required" in no_target.stderr
