"""An ONNX model's graph inputs and outputs, read from the protobuf wire format without ``onnx``.

The server derives a config.pbtxt from a bare ``model.onnx`` (docs/config.md, "Derived configuration").
``onnx`` is not a server dependency and opening an onnxruntime session just to read names would load
every weight (and open external data files before they are checked), so this reads only the graph's
``input``/``output`` value infos (and initializer names, which IR < 4 also lists as inputs) through
``mmap``: weights are sliced past, never copied.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engines.onnx_wire import MalformedModel, fields

# field numbers of onnx.proto
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_NAME = 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_ELEM, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2

#: TensorProto.DataType -> inferd dtype names (the ones a config.pbtxt can declare)
ONNX_ELEM_TYPES: dict[int, str] = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
    16: "BF16",
}


class SignatureUnknown(Exception):
    """The graph does not say enough to write a config (a message a user can act on)."""


@dataclass(frozen=True, slots=True)
class GraphTensor:
    """One graph input or output: ``dims`` has -1 for every symbolic or unknown dimension."""

    name: str
    dtype: str
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GraphSignature:
    inputs: tuple[GraphTensor, ...]
    outputs: tuple[GraphTensor, ...]


Field = tuple[int, int | memoryview]


def _fields(data: memoryview) -> Iterator[Field]:
    """(field number, varint value or length-delimited payload); fixed-width fields are skipped."""
    return ((number, value) for number, value in fields(data) if value is not None)


def _text(payload: int | memoryview) -> str:
    return bytes(payload).decode("utf-8", "replace") if isinstance(payload, memoryview) else ""


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _dims(shape: memoryview, name: str) -> tuple[int, ...]:
    dims: list[int] = []
    for number, dim in _fields(shape):
        if number != _SHAPE_DIM or not isinstance(dim, memoryview):
            continue
        size = -1  # dim_param (symbolic) or neither set (unknown)
        for part, value in _fields(dim):
            if part == _DIM_VALUE and isinstance(value, int):
                size = _signed(value)
                if size <= 0:
                    raise SignatureUnknown(f"'{name}' has a dimension of {size}")
        dims.append(size)
    return tuple(dims)


def _tensor(value_info: memoryview) -> GraphTensor:
    name, elem, typed, shaped = "", 0, False, False
    dims: tuple[int, ...] = ()
    for number, payload in _fields(value_info):
        if number == _VALUE_NAME:
            name = _text(payload)
        elif number == _VALUE_TYPE and isinstance(payload, memoryview):
            for kind, tensor in _fields(payload):
                if kind != _TYPE_TENSOR or not isinstance(tensor, memoryview):
                    continue
                typed = True
                for part, value in _fields(tensor):
                    if part == _TENSOR_ELEM and isinstance(value, int):
                        elem = value
                    elif part == _TENSOR_SHAPE and isinstance(value, memoryview):
                        shaped, dims = True, _dims(value, name)
    if not typed:
        raise SignatureUnknown(f"'{name}' is not a tensor (sequences, maps and optionals need a config.pbtxt)")
    dtype = ONNX_ELEM_TYPES.get(elem)
    if dtype is None:
        raise SignatureUnknown(f"'{name}' has ONNX element type {elem}, which inferd does not serve")
    if not shaped:
        raise SignatureUnknown(f"'{name}' has no shape in the graph (its rank is unknown)")
    if not dims:
        raise SignatureUnknown(f"'{name}' is a scalar (rank 0); inferd tensors have at least one dimension")
    return GraphTensor(name, dtype, dims)


def _initializer_name(tensor: memoryview) -> str:
    return next((_text(v) for n, v in _fields(tensor) if n == _TENSOR_NAME), "")


def _graph(graph: memoryview) -> GraphSignature:
    inputs: list[memoryview] = []
    outputs: list[memoryview] = []
    initializers: set[str] = set()
    for number, payload in _fields(graph):
        if not isinstance(payload, memoryview):
            continue
        if number == _GRAPH_INPUT:
            inputs.append(payload)
        elif number == _GRAPH_OUTPUT:
            outputs.append(payload)
        elif number == _GRAPH_INITIALIZER:
            initializers.add(_initializer_name(payload))
    ins = tuple(t for t in map(_tensor, inputs) if t.name not in initializers)
    outs = tuple(map(_tensor, outputs))
    if not ins or not outs:
        raise SignatureUnknown(f"the graph has no {'inputs' if not ins else 'outputs'}")
    return GraphSignature(ins, outs)


def read_signature(path: Path) -> GraphSignature:
    """The graph inputs (less initializers) and outputs of the ONNX model at ``path``.

    Raises SignatureUnknown when the graph does not pin down a servable signature, MalformedModel when
    the file is not an ONNX protobuf, OSError when it cannot be read.
    """
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            raise MalformedModel("the file is empty")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            graphs = [p for n, p in _fields(memoryview(mapped)) if n == _MODEL_GRAPH and isinstance(p, memoryview)]
            if not graphs:
                raise MalformedModel("no graph in the file")
            return _graph(graphs[-1])
        finally:
            graphs = []
            with contextlib.suppress(BufferError):  # a view still referenced: the map closes when collected
                mapped.close()
