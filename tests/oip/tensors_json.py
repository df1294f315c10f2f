"""numpy tensors as JSON, exactly (dtype, shape, bytes), between the pytest process and the tritonclient driver.

Both sides import this module: the tests as ``tests.oip.tensors_json``, the driver (run by the tritonclient
venv's interpreter, which cannot import inferd) as ``tensors_json`` from its own folder. numpy only.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

#: OIP datatype name → numpy dtype (BYTES is an object array of bytes)
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if array.dtype == np.dtype(dtype):
            return name
    raise ValueError(f"no OIP datatype for numpy dtype {array.dtype}")


def _as_bytes(item: Any) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)


def encode(array: np.ndarray) -> dict[str, Any]:
    """``{"datatype", "shape", "b64"}`` (little-endian bytes) or, for BYTES, ``"items"``: one base64 per element."""
    datatype = datatype_of(array)
    shape = [int(d) for d in array.shape]
    if datatype == "BYTES":
        items = [base64.b64encode(_as_bytes(item)).decode("ascii") for item in array.reshape(-1)]
        return {"datatype": datatype, "shape": shape, "items": items}
    data = np.ascontiguousarray(array, dtype=np.dtype(DATATYPES[datatype]).newbyteorder("<")).tobytes()
    return {"datatype": datatype, "shape": shape, "b64": base64.b64encode(data).decode("ascii")}


def decode(encoded: dict[str, Any]) -> np.ndarray:
    """The array ``encode`` described (BYTES: an object array of ``bytes``)."""
    shape = tuple(encoded["shape"])
    if encoded["datatype"] == "BYTES":
        array = np.empty(len(encoded["items"]), dtype=object)
        for i, item in enumerate(encoded["items"]):
            array[i] = base64.b64decode(item)
        return array.reshape(shape)
    dtype = np.dtype(DATATYPES[encoded["datatype"]]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(encoded["b64"]), dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
