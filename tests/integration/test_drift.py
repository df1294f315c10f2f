"""Live input drift (issue 17, acceptance 1): a reference profile written by the real `inferd profile`,
traffic from the reference distribution (no drift), then one feature shifted by 1.5 σ (drift on that
feature only, within one window of requests); the first-N-requests reference; a profile that names the
wrong tensors fails the load with its reason.

The bound: with window_rows 400, sample_fraction 1 and 20 rows per request, drift is flagged once
WINDOW_REQUESTS = 20 shifted requests have been served (one full window) — asserted by sending exactly
that many and then waiting only for the background summary (every 0.5 s), not for more traffic.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from inferd import Client
from inferd.v1 import inference_pb2
from server.telemetry.options import TelemetryOptions
from tests.integration.test_metrics import scrape, value
from tests.support import ServerThread, eventually, write_model

ROWS = 20
WINDOW_ROWS = 400
WINDOW_REQUESTS = WINDOW_ROWS // ROWS
SHIFTED = 2

IDENTITY = """
import numpy as np

class Model:
    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32)}
"""

CONFIG = """
max_batch_size: 64
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""


def _drift_config(extra: str = "") -> str:
    return CONFIG + f"drift {{ window_rows: {WINDOW_ROWS} sample_fraction: 1.0 {extra} }}\n"


def _drift(client: Client, model: str) -> inference_pb2.DriftStatistics:
    (stats,) = client.statistics(model)
    return stats.drift


def _send(client: Client, model: str, rng: np.random.Generator, requests: int, shift: float = 0.0) -> None:
    for _ in range(requests):
        x = rng.standard_normal((ROWS, 4)).astype(np.float32)
        x[:, SHIFTED] += shift
        client.predict(model, {"x": x})


def _profile(version_dir: Path, data: dict[str, np.ndarray]) -> subprocess.CompletedProcess[str]:
    np.savez(version_dir / "sample.npz", **data)
    return subprocess.run(
        [sys.executable, "-m", "server", "profile", "--model-dir", str(version_dir), "--data", "sample.npz"],
        cwd=version_dir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _assert_drift_on_the_shifted_feature_only(client: Client, model: str, rng: np.random.Generator) -> None:
    _send(client, model, rng, WINDOW_REQUESTS)
    stable = eventually(lambda: (d := _drift(client, model)).window_rows >= WINDOW_ROWS and d, what="a full window")
    assert not stable.drifting, stable
    assert all(f.psi < f.threshold for f in stable.features), stable
    _send(client, model, rng, WINDOW_REQUESTS, shift=1.5)
    drifted = eventually(lambda: (d := _drift(client, model)).drifting and d, what="drift flagged")
    flagged = [(f.tensor, f.column) for f in drifted.features if f.drifting]
    assert flagged == [("x", SHIFTED)], drifted
    assert all(f.threshold == 0.2 for f in drifted.features)


def test_a_reference_profile_flags_the_shifted_feature_only(tmp_path: Path) -> None:
    write_model(tmp_path, "m", _drift_config(), {1: IDENTITY})
    rng = np.random.default_rng(17)
    done = _profile(tmp_path / "m" / "1", {"x": rng.standard_normal((5000, 4)).astype(np.float32)})
    assert done.returncode == 0, done.stderr
    assert "4 feature(s) of x" in done.stdout
    with (
        ServerThread(tmp_path, telemetry=TelemetryOptions(metrics_port=0)) as server,
        Client(server.address) as client,
    ):
        assert _drift(client, "m").reference == "file"
        _assert_drift_on_the_shifted_feature_only(client, "m", rng)
        assert [f.column for f in _drift(client, "m").features] == [0, 1, 2, 3]
        assert server.server is not None
        series = scrape(server.server.metrics_port)
    mv = {"model": "m", "version": "1"}
    assert value(series, "inferd_drifting", **mv) == 1
    assert value(series, "inferd_drift_psi", **mv, tensor="x", feature=str(SHIFTED)) > 0.2
    assert value(series, "inferd_drift_psi", **mv, tensor="x", feature="0") < 0.2


def test_the_first_requests_can_be_the_reference(tmp_path: Path) -> None:
    write_model(tmp_path, "m", _drift_config("reference_requests: 25"), {1: IDENTITY})
    rng = np.random.default_rng(7)
    with ServerThread(tmp_path) as server, Client(server.address) as client:
        assert _drift(client, "m").reference == ""
        _send(client, "m", rng, 25)
        eventually(lambda: _drift(client, "m").reference == "first_requests", what="the reference built")
        _assert_drift_on_the_shifted_feature_only(client, "m", rng)


def test_a_profile_naming_other_tensors_fails_the_load_with_the_reason(tmp_path: Path) -> None:
    write_model(tmp_path, "m", _drift_config(), {1: IDENTITY})
    done = _profile(tmp_path / "m" / "1", {"features": np.zeros((10, 4), dtype=np.float32)})
    assert done.returncode == 0, done.stderr
    write_model(tmp_path, "bare", CONFIG + "drift {}\n", {1: IDENTITY})
    with ServerThread(tmp_path) as server, Client(server.address) as client:
        versions = {m.name: m.versions[0] for m in client.list_models()}
    assert versions["m"].state == inference_pb2.VERSION_STATE_FAILED
    assert "names tensor(s) features that the model does not have (inputs: x; outputs: y)" in versions["m"].reason
    assert versions["bare"].state == inference_pb2.VERSION_STATE_FAILED
    assert "reference.npz" in versions["bare"].reason and "inferd profile" in versions["bare"].reason
