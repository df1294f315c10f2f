"""The external data files an ONNX model names, read from the protobuf wire format without ``onnx``.

A ``model.onnx`` may keep tensors in other files (``external_data`` entries with a ``location``
relative to the model). onnxruntime opens them itself; recent versions refuse absolute and escaping
locations, older ones (which inferd also accepts) do not, and a symlink beside the model can still
lead out. So the engine lists every location first and checks each resolves inside the repository.

The walk reads the file through ``mmap`` and skips what it does not need (weights stored inline are
never copied): the model's graph, functions and training graphs; in graphs, initializers, sparse
initializers and nodes; in nodes, attributes holding tensors or graphs (``Constant``, ``If``, ``Loop``…).
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from pathlib import Path

from engines.onnx_wire import MalformedModel, fields

__all__ = ["MalformedModel", "external_locations"]

# field numbers of onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ...)
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_GRAPHS = (1, 2)  # TrainingInfoProto.initialization, .algorithm
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_TENSORS = (1, 2)  # SparseTensorProto.values, .indices
_TENSOR_EXTERNAL = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2

_MAX_DEPTH = 64


def external_locations(path: Path) -> list[str]:
    """Every external data ``location`` named in the model at ``path``, in file order (may repeat)."""
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return []
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        problem: str | None = None
        try:
            found = list(_model(memoryview(mapped)))
        except MalformedModel as exc:
            problem, found = str(exc), []  # not the exception itself: its frames hold views of the map
        with contextlib.suppress(BufferError):  # a view still referenced: the map closes when collected
            mapped.close()
        if problem is not None:
            raise MalformedModel(problem)
        return found


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, payload) for every field; the payload only for length-delimited ones."""
    for number, value in fields(data):
        yield number, value if isinstance(value, memoryview) else None


def _model(data: memoryview) -> Iterator[str]:
    for number, payload in _fields(data):
        if payload is None:
            continue
        if number == _MODEL_GRAPH:
            yield from _graph(payload, 0)
        elif number == _MODEL_FUNCTIONS:
            yield from _nodes_of(payload, _FUNCTION_NODE, 0)
        elif number == _MODEL_TRAINING:
            for inner, graph in _fields(payload):
                if inner in _TRAINING_GRAPHS and graph is not None:
                    yield from _graph(graph, 0)


def _graph(data: memoryview, depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise MalformedModel(f"graphs nest deeper than {_MAX_DEPTH} levels")
    for number, payload in _fields(data):
        if payload is None:
            continue
        if number == _GRAPH_INITIALIZER:
            yield from _tensor(payload)
        elif number == _GRAPH_SPARSE:
            yield from _sparse(payload)
        elif number == _GRAPH_NODE:
            yield from _node(payload, depth)


def _nodes_of(data: memoryview, node_field: int, depth: int) -> Iterator[str]:
    for number, payload in _fields(data):
        if number == node_field and payload is not None:
            yield from _node(payload, depth)


def _node(data: memoryview, depth: int) -> Iterator[str]:
    for number, attribute in _fields(data):
        if number != _NODE_ATTRIBUTE or attribute is None:
            continue
        for kind, payload in _fields(attribute):
            if payload is None:
                continue
            if kind in (_ATTR_TENSOR, _ATTR_TENSORS):
                yield from _tensor(payload)
            elif kind in (_ATTR_GRAPH, _ATTR_GRAPHS):
                yield from _graph(payload, depth + 1)
            elif kind in (_ATTR_SPARSE, _ATTR_SPARSES):
                yield from _sparse(payload)


def _sparse(data: memoryview) -> Iterator[str]:
    for number, payload in _fields(data):
        if number in _SPARSE_TENSORS and payload is not None:
            yield from _tensor(payload)


def _tensor(data: memoryview) -> Iterator[str]:
    for number, entry in _fields(data):
        if number != _TENSOR_EXTERNAL or entry is None:
            continue
        key = value = b""
        for part, payload in _fields(entry):
            if payload is None:
                continue
            if part == _ENTRY_KEY:
                key = bytes(payload)
            elif part == _ENTRY_VALUE:
                value = bytes(payload)
        if key == b"location":
            yield value.decode("utf-8", "replace")
