"""Sample inputs (``<version>/warmup.npz``) for the load-time dry run and warm-up, and InvalidInput.

A model with real pre-processing rejects the zeros and empty strings of the default dry run; with a
sample file beside it, it loads READY. A sample file that does not fit the signature fails the load,
naming the file and the input. ``engines.model_api.InvalidInput`` is the public way for model.py to
answer INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

READY = inference_pb2.VERSION_STATE_READY
FAILED = inference_pb2.VERSION_STATE_FAILED

PARSE_CONFIG = """
max_batch_size: 8
input { name: "text" data_type: DATA_TYPE_BYTES dims: [-1] }
output { name: "value" data_type: DATA_TYPE_FP32 dims: [-1] }
"""
#: float('') fails, as real pre-processing does on the default dry run's empty strings
PARSE_MODEL = """
import numpy as np

from engines.model_api import InvalidInput

class Model:
    def infer(self, inputs):
        values = [float(t.decode()) for t in inputs["text"]]
        for v in values:
            if v < 0:
                raise InvalidInput(f"value must not be negative, got {v}")
        return {"value": np.array(values, dtype=np.float32)}
"""
FILE_WARMUP = "warmup { input_kind: INPUT_KIND_FILE batch_sizes: [1, 8] count: 2 }\n"
TS_CONFIG = """
engine: "torch"
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
"""


class _PositiveOnly(torch.nn.Module):
    """A TorchScript model that refuses all-zero input (like a normaliser dividing by the row sum)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.sum(dim=1) == 0).any()):
            raise ValueError("a row sums to zero")
        return x / x.sum(dim=1, keepdim=True)


def _samples(version_dir: Path, **arrays: np.ndarray) -> None:
    np.savez(version_dir / "warmup.npz", **arrays)  # type: ignore[arg-type]


def build(root: Path) -> Path:
    texts = np.array(["1.5", "2", "0.25"])
    _samples(write_model(root, "parse", PARSE_CONFIG, {1: PARSE_MODEL}) / "1", text=texts)
    write_model(root, "parse_without_samples", PARSE_CONFIG, {1: PARSE_MODEL})
    _samples(write_model(root, "parse_file_warmup", PARSE_CONFIG + FILE_WARMUP, {1: PARSE_MODEL}) / "1", text=texts)
    write_model(root, "file_warmup_without_samples", PARSE_CONFIG + FILE_WARMUP, {1: PARSE_MODEL})
    _samples(
        write_model(root, "parse_wrong_dtype", PARSE_CONFIG, {1: PARSE_MODEL}) / "1",
        text=np.array([1.5, 2.0]),
    )
    scale = write_model(root, "scale_wrong_shape", SCALE_CONFIG, {1: scale_model(2)})
    _samples(scale / "1", x=np.ones((2, 3), dtype=np.float32))
    _samples(
        write_model(root, "scale_extra_array", SCALE_CONFIG, {1: scale_model(2)}) / "1",
        x=np.ones((2, 4), dtype=np.float32),
        z=np.ones(2, dtype=np.float32),
    )
    scripted = torch.jit.script(_PositiveOnly())
    for name, with_samples in (("ts", True), ("ts_without_samples", False)):
        version = write_model(root, name, TS_CONFIG) / "1"
        version.mkdir()
        scripted.save(str(version / "model.pt"))
        if with_samples:
            _samples(version, x=np.arange(1, 9, dtype=np.float32).reshape(2, 4))
    return root


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    repository = build(tmp_path_factory.mktemp("samples-repo"))
    with ServerThread(repository) as server, grpc.insecure_channel(server.address) as opened:
        yield opened


def _status(channel: grpc.Channel, name: str) -> inference_pb2.VersionStatus:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    (version,) = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name=name), timeout=30).versions
    return version


def _parse(channel: grpc.Channel, name: str, *texts: str) -> np.ndarray:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    array = np.array([t.encode() for t in texts], dtype=object)
    request = inference_pb2.PredictRequest(model_name=name, inputs=[from_numpy("text", array)])
    return to_numpy(stub.Predict(request, timeout=30).outputs[0])


def test_a_model_that_rejects_zeros_loads_ready_with_sample_files(channel):
    assert _status(channel, "parse").state == READY, _status(channel, "parse").reason
    assert _parse(channel, "parse", "4.5").tolist() == [4.5]


def test_without_sample_files_the_dry_run_failure_names_the_problem_and_the_remedy(channel):
    status = _status(channel, "parse_without_samples")
    assert status.state == FAILED
    assert "could not convert string to float: ''" in status.reason
    assert "warmup.npz" in status.reason


def _warmup_count(channel: grpc.Channel, name: str) -> int:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    request = inference_pb2.ModelStatisticsRequest(name=name)
    return int(stub.ModelStatistics(request, timeout=30).statistics[0].warmup_count)


def test_file_warmup_entries_run_the_samples_at_each_batch_size(channel):
    assert _status(channel, "parse_file_warmup").state == READY, _status(channel, "parse_file_warmup").reason
    assert _warmup_count(channel, "parse_file_warmup") == 4  # batch sizes 1 and 8 (rows repeated), twice each
    assert _warmup_count(channel, "parse") == 1  # no warmup entry: the sample file, once


def test_file_warmup_without_a_sample_file_fails_saying_so(channel):
    status = _status(channel, "file_warmup_without_samples")
    assert status.state == FAILED
    assert "INPUT_KIND_FILE but version 1 has no warmup.npz" in status.reason


def test_a_sample_of_the_wrong_dtype_fails_naming_file_and_input(channel):
    status = _status(channel, "parse_wrong_dtype")
    assert status.state == FAILED
    assert "1/warmup.npz: input 'text' is float64 but config.pbtxt declares BYTES" in status.reason


def test_a_sample_of_the_wrong_shape_fails_naming_file_and_input(channel):
    status = _status(channel, "scale_wrong_shape")
    assert status.state == FAILED
    assert "1/warmup.npz: input 'x' has shape [2, 3]; config.pbtxt declares [-1, 4]" in status.reason


def test_a_sample_array_for_no_input_fails_naming_it(channel):
    status = _status(channel, "scale_extra_array")
    assert status.state == FAILED
    assert "warmup.npz has array(s) ['z'] that are not inputs of the model" in status.reason


def test_torchscript_models_dry_run_on_the_samples_too(channel):
    assert _status(channel, "ts").state == READY, _status(channel, "ts").reason
    failed = _status(channel, "ts_without_samples")
    assert failed.state == FAILED
    assert "a row sums to zero" in failed.reason


def test_invalid_input_from_model_py_is_invalid_argument_and_the_server_keeps_serving(channel):
    with pytest.raises(grpc.RpcError) as err:
        _parse(channel, "parse", "-3")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "value must not be negative, got -3.0" in (err.value.details() or "")
    assert _parse(channel, "parse", "2", "3").tolist() == [2.0, 3.0]
