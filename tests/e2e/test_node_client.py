"""Another language: the Node.js example (clients/node) talks to a real server and gets the same score
as onnxruntime in-process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.server_process import ServerProcess

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


def test_node_client_predicts_with_raw_tensors_and_sees_typed_errors(
    node_client: Path, inferd_server: ServerProcess, example_repository: Path
):
    done = subprocess.run(
        ["node", "predict.js", inferd_server.address], cwd=node_client, capture_output=True, text=True, timeout=60
    )
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
