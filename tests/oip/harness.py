"""The pytest side of the tritonclient acceptance tests: run triton_driver.py in the tritonclient venv, build
cases (one request each, inputs in tensors_json's encoding), and the probe models the tests add to a copy
of the example repository. Runs in the project venv; the driver never imports this.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.oip.tensors_json import decode, encode

DRIVER = Path(__file__).resolve().parent / "triton_driver.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DRIVER_TIMEOUT_S = 180


def probe_config(name: str, max_batch_size: int, batching: bool) -> str:
    return f"""
name: "{name}"
max_batch_size: {max_batch_size}
input {{ name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }}
output {{ name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }}
output {{ name: "call" data_type: DATA_TYPE_INT64 dims: [-1, 1] }}
output {{ name: "batch_rows" data_type: DATA_TYPE_INT64 dims: [-1, 1] }}
{"dynamic_batching { max_queue_delay_microseconds: 1000 }" if batching else ""}
"""


@dataclass
class Case:
    """One inference request, sent the same way to tritonclient (via the driver) and to the inferd SDK."""

    id: str
    model: str
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    version: str = ""
    parameters: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "inputs": [{"name": name, "tensor": encode(array)} for name, array in self.inputs.items()],
            "outputs": self.outputs,
            "parameters": self.parameters,
            **self.extra,
        }


def driver_spec(url: str, scenario: str, client: str = "sync", **arguments: Any) -> dict[str, Any]:
    cases = arguments.pop("cases", None)
    spec = {"url": url, "scenario": scenario, "client": client, **arguments}
    if cases is not None:
        spec["cases"] = [case.spec() for case in cases]
    return spec


def write_spec(spec: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec['scenario']}-{spec['client']}-{len(list(folder.iterdir()))}.json"
    path.write_text(json.dumps(spec))
    return path


def driver_command(python: Path, spec_path: Path) -> list[str]:
    return [str(python), str(DRIVER), str(spec_path)]


def finish(done: subprocess.CompletedProcess[str] | tuple[int, str, str], what: str) -> dict[str, Any]:
    """The driver's JSON, or AssertionError with its stderr (a crash of tritonclient is a failure to read)."""
    code, out, err = (done.returncode, done.stdout, done.stderr) if not isinstance(done, tuple) else done
    if code != 0:
        raise AssertionError(f"triton_driver.py ({what}) exited with {code}:\n{err[-6000:]}")
    return dict(json.loads(out))


def run_driver(python: Path, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    command = driver_command(python, write_spec(spec, folder))
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S, check=False)
    return finish(done, f"{spec['scenario']}, {spec['client']}")


def outputs_of(answer: dict[str, Any]) -> dict[str, np.ndarray]:
    assert "error" not in answer, f"tritonclient got an error: {answer['error']}"
    return {name: decode(encoded) for name, encoded in answer["outputs"].items()}


def assert_same_outputs(oip: dict[str, np.ndarray], v1: dict[str, np.ndarray], what: str) -> None:
    """Same names, dtypes and shapes; numbers equal (floats to float32 rounding: a batch may differ in size), bytes
    exactly."""
    assert sorted(oip) == sorted(v1), f"{what}: outputs {sorted(oip)} over OIP, {sorted(v1)} over inferd.v1"
    for name, expected in v1.items():
        got = oip[name]
        assert got.shape == expected.shape, f"{what}: '{name}' shape {got.shape} over OIP, {expected.shape} over v1"
        if expected.dtype == np.object_:
            assert got.dtype == np.object_, f"{what}: '{name}' is {got.dtype} over OIP, BYTES over inferd.v1"
            assert [bytes(x) for x in got.reshape(-1)] == [bytes(x) for x in expected.reshape(-1)], what
        elif expected.dtype.kind == "f":
            assert got.dtype == expected.dtype, f"{what}: '{name}' is {got.dtype} over OIP, {expected.dtype} over v1"
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{what}: '{name}'")
        else:
            assert got.dtype == expected.dtype, f"{what}: '{name}' is {got.dtype} over OIP, {expected.dtype} over v1"
            np.testing.assert_array_equal(got, expected, err_msg=f"{what}: '{name}'")
