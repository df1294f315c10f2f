"""A config.pbtxt derived from a bare ``model.onnx`` (Triton's auto-complete, done in the open).

A model folder without config.pbtxt is served when a version folder holds a ``model.onnx``: the graph's
inputs and outputs become the signature (symbolic dimensions → -1), a leading symbolic dimension on
every tensor means a batch dimension (``max_batch_size`` DERIVED_MAX_BATCH), everything else takes the
defaults. The result is an ordinary ModelConfig, validated like a written one, so ``inferd config``
can print it for the user to keep. TorchScript is not derived: a ``model.pt`` records no input names,
dtypes or shapes that can be read without running it (docs/config.md, "Derived configuration").
"""

from __future__ import annotations

from pathlib import Path

from engines.onnx_external import MalformedModel
from engines.onnx_signature import GraphTensor, SignatureUnknown, read_signature
from inferd.tensors import DTYPE_BY_NAME, DTYPE_NAMES
from inferd.v1 import model_config_pb2
from server.models.config import ConfigError

ONNX_FILE = "model.onnx"
#: max_batch_size of a derived config whose tensors all lead with a symbolic dimension
DERIVED_MAX_BATCH = 8


def _batched(tensors: tuple[GraphTensor, ...]) -> bool:
    return all(t.dims[0] == -1 for t in tensors)


def _spec(tensor: GraphTensor) -> model_config_pb2.TensorSpec:
    spec = model_config_pb2.TensorSpec(name=tensor.name, dims=list(tensor.dims))
    spec.data_type = DTYPE_BY_NAME[tensor.dtype]  # type: ignore[assignment]
    return spec


def derive_config(name: str, onnx_path: Path, display: str) -> model_config_pb2.ModelConfig:
    """The config for model ``name`` read from ``onnx_path`` (named ``display`` in errors)."""
    try:
        graph = read_signature(onnx_path)
    except SignatureUnknown as exc:
        raise ConfigError(f"{display}: cannot derive a config.pbtxt: {exc}; write one (docs/config.md)") from None
    except MalformedModel as exc:
        raise ConfigError(f"{display}: not an ONNX model ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read: {exc.strerror}") from None
    config = model_config_pb2.ModelConfig(name=name)
    if _batched(graph.inputs + graph.outputs):
        config.max_batch_size = DERIVED_MAX_BATCH
    config.input.extend(_spec(t) for t in graph.inputs)
    config.output.extend(_spec(t) for t in graph.outputs)
    return config


def summary(config: model_config_pb2.ModelConfig) -> str:
    """One log line's worth: ``x FP32 [-1, 4] -> y FP32 [-1, 2], max_batch_size 8``."""

    def side(specs: list[model_config_pb2.TensorSpec]) -> str:
        return ", ".join(f"{s.name} {DTYPE_NAMES.get(s.data_type, '?')} {list(s.dims)}" for s in specs)

    return f"{side(list(config.input))} -> {side(list(config.output))}, max_batch_size {config.max_batch_size}"
