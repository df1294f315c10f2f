"""numpy <-> inferd.v1.Tensor conversion, shared by the SDK and the server's codec.

Raw bytes are the fast path: decoding is one ``np.frombuffer`` (a zero-copy, read-only view) and
encoding one ``tobytes``. Typed repeated fields exist so a person can write tensors as JSON.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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
        #: the message without the tensor's name (for a receiver that quotes the name its own way)
        self.detail = message


# Fast path for dtype_name_of: one dict lookup instead of comparing against every dtype (~3 us).
_NAMES_BY_DTYPE: dict[np.dtype[Any], str] = {dtype: name for name, dtype in NUMPY_DTYPES.items() if name != "BYTES"}


#: the wire is little-endian; native arrays need a byte swap only on a big-endian host
_BIG_ENDIAN_HOST = sys.byteorder == "big"


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


#: Most dimensions a tensor may have (numpy 1.x's limit; numpy 2 allows 64).
MAX_DIMS = 32
#: Largest array numpy can describe: the non-zero dimensions times the item size stay below this.
_MAX_ARRAY_BYTES = 2**62
_U32 = struct.Struct("<I")


@dataclass(slots=True)
class TensorInfo:
    """What a Tensor declares, checked for consistency but not decoded (cheap: no element is read).

    ``extent`` is the product of the non-zero dimensions: what the shape would cost if its zero
    dimensions were not there, so ``[0, 2**62]`` is not mistaken for a harmless empty tensor.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    count: int
    extent: int
    #: bytes in raw_contents (0: the elements travel in a typed field, or there are none)
    raw_size: int = 0


def check_shape(name: str, shape: Sequence[int], itemsize: int = 8) -> tuple[int, int]:
    """``(element count, extent)`` of a declared shape; TensorError for one no array can have.

    Refuses more than :data:`MAX_DIMS` dimensions, negative dimensions, and shapes whose non-zero
    dimensions multiply past what numpy can address, without ever forming a huge product.
    """
    if len(shape) > MAX_DIMS:
        raise TensorError(name, f"shape has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    count = extent = 1
    limit = _MAX_ARRAY_BYTES // max(itemsize, 1)
    for dim in shape:
        if dim < 0:
            raise TensorError(name, f"shape {_fmt(shape)} has a negative dimension")
        count *= dim
        extent *= dim or 1
        if extent > limit:
            raise TensorError(name, f"shape {_fmt(shape)} is too large: its dimensions multiply past 2**62 bytes")
    return count, extent


def _fmt(shape: Sequence[int]) -> str:
    """A shape for a message, cut short when a client sent a very long one."""
    dims = [str(d) for d in shape[: MAX_DIMS + 1]]
    if len(shape) > MAX_DIMS + 1:
        dims.append(f"... ({len(shape)} dimensions)")
    return "[" + ", ".join(dims) + "]"


def encode_bytes_elements(items: Sequence[Any]) -> bytes:
    """BYTES raw layout: per element a 4-byte little-endian length, then the bytes."""
    parts: list[bytes] = []
    for item in items:
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_bytes_array(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    """BYTES raw layout → a 1-D object array of ``count`` bytes; TensorError names the tensor.

    Elements of one length (ids, hashes, fixed-size records) are parsed and copied by numpy without a
    Python loop; mixed lengths take one tight loop (the length prefixes chain, so they are read in order).
    """
    if 4 * count > len(raw):
        raise TensorError(name, f"raw_contents holds fewer than the {count} BYTES elements its shape needs")
    if count == 0:
        if raw:
            raise TensorError(name, f"raw_contents has {len(raw)} bytes after the 0 BYTES elements")
        return np.empty(0, dtype=object)
    (first,) = _U32.unpack_from(raw, 0)
    if len(raw) == count * (4 + first):
        uniform = _decode_uniform(raw, count, first)
        if uniform is not None:
            return uniform
    return _decode_mixed(name, raw, count)


def _decode_uniform(raw: bytes | memoryview, count: int, length: int) -> np.ndarray | None:
    """Every element ``length`` bytes long: checked and copied by numpy; None if the lengths differ."""
    if length == 0:
        if np.frombuffer(raw, dtype="<u4").any():
            return None
        return np.full(count, b"", dtype=object)
    records = np.frombuffer(raw, dtype=np.dtype([("n", "<u4"), ("data", f"V{length}")]))
    if not (records["n"] == length).all():
        return None
    return records["data"].astype(object)


def _decode_mixed(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    if not isinstance(raw, bytes):
        raw = bytes(raw)  # one copy; slicing bytes is what makes each element cheap
    items: list[bytes] = []
    append = items.append
    unpack = _U32.unpack_from
    offset, end = 0, len(raw)
    for _ in range(count):
        if offset + 4 > end:
            raise TensorError(name, f"raw_contents holds fewer than the {count} BYTES elements its shape needs")
        (length,) = unpack(raw, offset)
        offset += 4
        stop = offset + length
        if stop > end:
            raise TensorError(name, "raw_contents ends inside a BYTES element")
        append(raw[offset:stop])
        offset = stop
    if offset != end:
        raise TensorError(name, f"raw_contents has {end - offset} bytes after the {count} BYTES elements")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def decode_bytes_elements(name: str, raw: bytes, count: int) -> list[bytes]:
    """BYTES raw layout → a list of ``count`` bytes (see :func:`decode_bytes_array`)."""
    items: list[bytes] = decode_bytes_array(name, raw, count).tolist()
    return items


def describe_tensor(tensor: tensor_pb2.Tensor, raw: bytes | memoryview | None = None) -> TensorInfo:
    """Check what a Tensor declares (dtype, shape, which field carries it, that field's size) without
    decoding an element, so a receiver can refuse it before paying for it.

    ``raw``: the tensor's raw_contents when the caller holds them apart from the message (a zero-copy
    view of the request); None reads them from the message.
    """
    name = tensor.name
    dtype_name = DTYPE_NAMES.get(tensor.data_type)
    if dtype_name is None:
        raise TensorError(name, "data_type is not set (e.g. DATA_TYPE_FP32)")
    if dtype_name == "BF16":
        raise TensorError(name, "BF16 tensors are not supported by the numpy codec")
    dtype = NUMPY_DTYPES[dtype_name]
    shape = tuple(tensor.shape)
    count, extent = check_shape(name, shape, dtype.itemsize)
    if raw is None:
        raw = tensor.raw_contents
    typed_field = TYPED_FIELDS[dtype_name]
    present = [field for field in _ALL_TYPED_FIELDS if len(getattr(tensor, field))]
    if raw and present:
        raise TensorError(name, f"has both raw_contents and {present[0]}; send one of them")
    if present and present != [typed_field]:
        raise TensorError(name, f"data type {dtype_name} is carried in {typed_field}, not {', '.join(present)}")
    if present:
        sent = len(getattr(tensor, typed_field))
        if sent != count:
            raise TensorError(name, f"shape {_fmt(shape)} needs {count} elements but {sent} were sent")
    elif dtype_name == "BYTES":
        if 4 * count > len(raw):
            raise TensorError(
                name,
                f"raw_contents has {len(raw)} bytes, too few for the {count} BYTES elements of shape {_fmt(shape)}",
            )
        if count == 0 and raw:
            raise TensorError(name, f"raw_contents has {len(raw)} bytes after the 0 BYTES elements")
    elif len(raw) != count * dtype.itemsize:
        raise TensorError(
            name,
            f"raw_contents has {len(raw)} bytes but shape {_fmt(shape)} of {dtype_name} needs {count * dtype.itemsize}",
        )
    return TensorInfo(name, dtype_name, shape, count, extent, len(raw))


def decode_tensor(tensor: tensor_pb2.Tensor, info: TensorInfo, raw: bytes | memoryview | None = None) -> np.ndarray:
    """Decode a Tensor that :func:`describe_tensor` accepted (``info`` is its answer; ``raw`` as there)."""
    name, dtype_name, shape = info.name, info.dtype, info.shape
    dtype = NUMPY_DTYPES[dtype_name]
    if raw is None:
        raw = tensor.raw_contents if info.raw_size else b""
    typed_field = TYPED_FIELDS[dtype_name]
    if dtype_name == "BYTES":
        if raw or info.count == 0:
            return decode_bytes_array(name, raw, info.count).reshape(shape)
        array = np.empty(info.count, dtype=object)
        array[:] = list(tensor.bytes_contents)
        return array.reshape(shape)
    if raw or info.count == 0:
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    values = getattr(tensor, typed_field)
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except OverflowError as exc:
        raise TensorError(name, f"a value does not fit {dtype_name}: {exc}") from None


def to_numpy(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """Decode a Tensor. Raw contents become a read-only zero-copy view; typed fields are converted."""
    return decode_tensor(tensor, describe_tensor(tensor))


def from_numpy(name: str, array: Any, *, raw: bool = True) -> tensor_pb2.Tensor:
    """Encode an array as a Tensor, as raw bytes (default) or in its typed field."""
    return fill_tensor(tensor_pb2.Tensor(), name, array, raw=raw)


def raw_bytes(array: np.ndarray) -> bytes:
    """A fixed-width array's elements as raw contents: C order, little-endian, one copy."""
    # tobytes() writes C order whatever the layout, so this is one copy even for strided views.
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and _BIG_ENDIAN_HOST):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


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
        tensor.raw_contents = raw_bytes(array)
    else:
        getattr(tensor, TYPED_FIELDS[dtype_name]).extend(array.reshape(-1).tolist())
    return tensor
