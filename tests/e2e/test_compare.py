"""Acceptance (issue 17, line 2): a champion (v1) and a challenger (v2, in shadow) on a synthetic labelled
dataset; feedback for a few thousand requests makes the real ``inferd compare`` name the challenger as
ahead, significant, and with equal models it says "no significant difference".

Row i's true class is i % 3; a version answers it right when (i * MULT) % 100 < RATE, else the next class.
MULT is coprime with 100, so over whole blocks of 100 rows a version is right on exactly RATE % of them —
deterministic, yet on different rows for different versions."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from inferd import Client
from tests.e2e.server_process import REPO_ROOT, ServerProcess, find_tool, tool_env
from tests.support import eventually, write_model

pytestmark = pytest.mark.e2e

REQUESTS = 2000  # one row each

MODEL = """
import numpy as np

class Model:
    def infer(self, inputs):
        i = np.asarray(inputs["x"])[:, 0].astype(np.int64)
        truth = i % 3
        right = (i * MULT) % 100 < RATE
        predicted = np.where(right, truth, (truth + 1) % 3)
        return {"probs": np.eye(3, dtype=np.float32)[predicted]}
"""

CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "probs" data_type: DATA_TYPE_FP32 dims: [-1, 3] }
version_policy { all {} }
version_labels { key: "stable" value: 1 }
shadow { version: 2 fraction: 1.0 }
feedback {}
"""


def model(mult: int, rate: int) -> str:
    return MODEL.replace("MULT", str(mult)).replace("RATE", str(rate))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("compare-repo")
    write_model(root, "better", CONFIG, {1: model(37, 70), 2: model(53, 90)})
    write_model(root, "equal", CONFIG, {1: model(37, 80), 2: model(53, 80)})
    process = ServerProcess(root, tmp_path_factory.mktemp("compare-server")).wait_ready()
    yield process
    code = process.terminate()
    assert code == 0, process.log()[-4000:]


def inferd(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [find_tool("inferd"), *args, "--address", server.address]
    return subprocess.run(command, cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=60)


def serve_and_score(server: ServerProcess, name: str) -> None:
    """REQUESTS Predicts (each mirrored to v2), then the truth for each once both versions answered."""
    with Client(server.address, timeout=30) as client:

        def predict(i: int) -> None:
            x = np.array([[i, 0, 0, 0]], np.float32)
            assert client.predict_response(name, {"x": x}, request_id=f"{name}-{i}").version == 1

        # two callers: mirrors then never pile up past the server's cap of 16 in flight, where they would be
        # dropped (counted) and the challenger would miss rows of the truth
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(predict, range(REQUESTS)))

        def mirrored() -> int:
            (stats,) = client.statistics(name, 2)
            return sum(c.compared + c.errors + c.dropped for c in stats.shadow)

        eventually(lambda: mirrored() == REQUESTS, what=f"{REQUESTS} mirrored requests")
        (stats,) = client.statistics(name, 2)
        assert sum(c.dropped + c.errors for c in stats.shadow) == 0, "some mirrors were dropped: not a fair test"

        def feedback(i: int) -> None:
            answer = client.feedback(name, f"{name}-{i}", np.array([i % 3], np.int64))
            assert sorted(answer.scored_versions) == [1, 2], answer

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(feedback, range(REQUESTS)))


def test_compare_names_the_better_challenger_ahead_significant(server: ServerProcess) -> None:
    serve_and_score(server, "better")
    table = inferd(server, "compare", "better")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    (champion,) = [line for line in lines if line.split()[:2] == ["1", "champion"]]
    (challenger,) = [line for line in lines if line.split()[:2] == ["2", "shadow"]]
    assert "100%" in champion and "accuracy 0.700" in champion and f"over {REQUESTS} rows" in champion
    assert "shadow 1" in challenger and "accuracy 0.900" in challenger
    assert "vs v1 probs: 2000 compared" in challenger  # the shadow agreement column
    (verdict,) = [line for line in lines if line.startswith("verdict:")]
    assert "v2 ahead" in verdict and "significant at alpha 0.05" in verdict, table.stdout

    as_json = inferd(server, "compare", "better", "--json", "--alpha", "0.01")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["champion"] == 1 and data["alpha"] == 0.01
    (v,) = data["verdicts"]
    assert v["ahead"] == 2 and v["significant"] and v["p_value"] < 1e-6
    scores = {row["version"]: row["score"] for row in data["versions"]}
    assert scores[1]["scored"] == scores[2]["scored"] == REQUESTS
    assert scores[2]["low"] < 0.9 < scores[2]["high"] and scores[1]["high"] < scores[2]["low"]


def test_compare_with_equal_models_says_no_significant_difference(server: ServerProcess) -> None:
    serve_and_score(server, "equal")
    table = inferd(server, "compare", "equal")
    assert table.returncode == 0, table.stderr
    (verdict,) = [line for line in table.stdout.splitlines() if line.startswith("verdict:")]
    assert "no significant difference" in verdict and "accuracy 0.800 vs 0.800" in verdict, table.stdout


def test_compare_refuses_a_bad_alpha_and_an_unknown_model(server: ServerProcess) -> None:
    bad = inferd(server, "compare", "equal", "--alpha", "1.5")
    assert bad.returncode == 2 and "--alpha must be in (0, 1)" in bad.stderr
    unknown = inferd(server, "compare", "nope")
    assert unknown.returncode != 0 and "nope" in unknown.stderr
