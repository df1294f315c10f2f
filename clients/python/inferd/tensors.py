"""numpy <-> inferd.v1.Tensor conversion, shared by the SDK and the server's codec.

Raw bytes are the fast path: decoding is one ``np.frombuffer`` (a zero-copy, read-only view) and
encoding one ``tobytes``. Typed repeated fields exist so a person can write tensors as JSON.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from inferd.v1 import tensor_pb2

DataType = tensor_pb2.DataType

#: Short dtype names used in configs, metadata and messages ("FP32"), by enum value.
DTYPE_NAMES: dict[int, str] = {
    value: name.removeprefix("DATA_TYPE_")
    for name, value in tensor_pb2.DataType.items()
    if value != tensor_pb2.DATA_TYPE_UNSPECIFIED
}
DTYPE_BY_NAME: dict[str, int] = {name: value for value, name in DTYPE_NAMES.items()}
# The same, typed as the enum for assigning to Tensor.data_type.
_DATA_TYPES: dict[str, tensor_pb2.DataType] = {name: getattr(tensor_pb2, f"DATA_TYPE_{name}") for name in DTYPE_BY_NAME}

#: numpy dtype for each fixed-width data type (little-endian). BYTES maps to object arrays of bytes.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

#: The typed repeated field that carries each data type.
TYPED_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int32_contents",
    "INT16": "int32_contents",
    "INT32": "int32_contents",
    "INT64": "int64_contents",
    "UINT8": "uint32_contents",
    "UINT16": "uint32_contents",
    "UINT32": "uint32_contents",
    "UINT64": "uint64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_TYPED_FIELDS = tuple(sorted(set(TYPED_FIELDS.values())))


class TensorError(ValueError):
    """A tensor that cannot be converted; the message names the tensor."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"tensor '{name}': {message}")
        self.tensor_name = name


# Fast path for dtype_name_of: one dict lookup instead of comparing against every dtype (~3 us).
_NAMES_BY_DTYPE: dict[np.dtype[Any], str] = {dtype: name for name, dtype in NUMPY_DTYPES.items() if name != "BYTES"}


def dtype_name_of(array: np.ndarray) -> str:
    """The inferd data type name for a numpy array's dtype."""
    kind = array.dtype
    name = _NAMES_BY_DTYPE.get(kind)
    if name is not None:
        return name
    if kind == np.dtype(object) or kind.kind in ("S", "U"):
        return "BYTES"
    for name, dtype in NUMPY_DTYPES.items():
        if name != "BYTES" and dtype == kind.newbyteorder("<"):
            return name
    raise TypeError(f"numpy dtype {kind} has no inferd data type")


def numpy_dtype(dtype_name: str) -> np.dtype[Any]:
    try:
        return NUMPY_DTYPES[dtype_name]
    except KeyError:
        raise TypeError(f"data type {dtype_name} has no numpy equivalent here") from None


def _element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def encode_bytes_elements(items: Sequence[Any]) -> bytes:
    """BYTES raw layout: per element a 4-byte little-endian length, then the bytes."""
    parts: list[bytes] = []
    for item in items:
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_bytes_elements(name: str, raw: bytes, count: int) -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    for _ in range(count):
        if offset + 4 > len(raw):
            raise TensorError(name, f"raw_contents holds fewer than the {count} BYTES elements its shape needs")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise TensorError(name, "raw_contents ends inside a BYTES element")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(raw):
        raise TensorError(name, f"raw_contents has {len(raw) - offset} bytes after the {count} BYTES elements")
    return items


def to_numpy(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """Decode a Tensor. Raw contents become a read-only zero-copy view; typed fields are converted."""
    name = tensor.name
    dtype_name = DTYPE_NAMES.get(tensor.data_type)
    if dtype_name is None:
        raise TensorError(name, "data_type is not set (e.g. DATA_TYPE_FP32)")
    shape = tuple(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise TensorError(name, f"shape {list(shape)} has a negative dimension")
    count = _element_count(shape)
    raw = tensor.raw_contents
    typed_field = TYPED_FIELDS.get(dtype_name)
    present = [field for field in _ALL_TYPED_FIELDS if len(getattr(tensor, field))]
    if raw and present:
        raise TensorError(name, f"has both raw_contents and {present[0]}; send one of them")
    if dtype_name == "BF16":
        raise TensorError(name, "BF16 tensors are not supported by the numpy codec")
    if present and present != [typed_field]:
        raise TensorError(name, f"data type {dtype_name} is carried in {typed_field}, not {', '.join(present)}")
    dtype = NUMPY_DTYPES[dtype_name]
    if dtype_name == "BYTES":
        items = decode_bytes_elements(name, raw, count) if raw else list(tensor.bytes_contents)
        if len(items) != count:
            raise TensorError(name, f"shape {list(shape)} needs {count} elements but {len(items)} were sent")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    if raw or not present:
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise TensorError(
                name,
                f"raw_contents has {len(raw)} bytes but shape {list(shape)} of {dtype_name} needs {expected}",
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    values = getattr(tensor, typed_field)  # type: ignore[arg-type]
    if len(values) != count:
        raise TensorError(name, f"shape {list(shape)} needs {count} elements but {len(values)} were sent")
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except OverflowError as exc:
        raise TensorError(name, f"a value does not fit {dtype_name}: {exc}") from None


def from_numpy(name: str, array: Any, *, raw: bool = True) -> tensor_pb2.Tensor:
    """Encode an array as a Tensor, as raw bytes (default) or in its typed field."""
    return fill_tensor(tensor_pb2.Tensor(), name, array, raw=raw)


def fill_tensor(tensor: tensor_pb2.Tensor, name: str, array: Any, *, raw: bool = True) -> tensor_pb2.Tensor:
    """Encode an array into an existing, empty Tensor such as ``request.inputs.add()``.

    Appending a finished Tensor to a repeated field copies the whole message (raw bytes included);
    filling the element in place does not.
    """
    array = np.asarray(array)
    dtype_name = dtype_name_of(array)
    tensor.name = name
    tensor.data_type = _DATA_TYPES[dtype_name]
    tensor.shape.extend(array.shape)
    if dtype_name == "BYTES":
        flat = array.reshape(-1).tolist()
        if raw:
            tensor.raw_contents = encode_bytes_elements(flat)
        else:
            tensor.bytes_contents.extend(x.encode() if isinstance(x, str) else bytes(x) for x in flat)
        return tensor
    if raw:
        # tobytes() writes C order whatever the layout, so this is one copy even for strided views.
        tensor.raw_contents = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    else:
        getattr(tensor, TYPED_FIELDS[dtype_name]).extend(array.reshape(-1).tolist())
    return tensor
