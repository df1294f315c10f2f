"""ModelInferRequest/ModelInferResponse ⇄ the internal request and numpy outputs.

An OIP input is handed to the same tensor checks and decoders as an inferd.v1 Tensor (server/api/inputs.py)
through :class:`OipTensor`, which reads like one: so both protocols refuse the same inputs with the same
messages, bound by the same limits, and batch together. Raw contents stay zero-copy views.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from inferd.oip.v2 import grpc_service_pb2 as pb
from inferd.tensors import DTYPE_BY_NAME, NUMPY_DTYPES, dtype_name_of, encode_bytes_elements, raw_bytes
from inferd.v1 import tensor_pb2
from server.api.codec import RequestIds, fill_parameter
from server.core.echo import echo
from server.core.errors import InvalidArgument
from server.core.types import InferRequest, ParamValue

#: request parameters that steer routing and encoding; they are not passed on to the model
ROUTING_PARAMETERS = ("version_label", "routing_key", "timeout", "binary_data_output")
#: the response parameter that marks a decoupled (generative) model's last response, as Triton names it
FINAL_RESPONSE = "triton_final_response"
_TYPED = tensor_pb2.TENSOR_ENCODING_TYPED
_RAW = tensor_pb2.TENSOR_ENCODING_RAW
_MIRROR = tensor_pb2.TENSOR_ENCODING_UNSPECIFIED
#: numpy dtype name → the OIP typed field carrying it (FP16 and BF16 have none: always raw)
_TYPED_OUT = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_DATATYPES = ", ".join(sorted(NUMPY_DTYPES))


class OipTensor:
    """An OIP input tensor sent in raw_input_contents, as inferd.tensors.describe_tensor/decode_tensor read an
    inferd.v1 Tensor: its typed fields are empty class attributes (no per-call lookup cost)."""

    __slots__ = ("data_type", "name", "raw_contents", "shape")
    has_contents = False
    bool_contents: Any = ()
    int32_contents: Any = ()
    int64_contents: Any = ()
    uint32_contents: Any = ()
    uint64_contents: Any = ()
    fp32_contents: Any = ()
    fp64_contents: Any = ()
    bytes_contents: Any = ()

    def __init__(self, tensor: Any) -> None:
        self.name: str = tensor.name
        data_type = DTYPE_BY_NAME.get(tensor.datatype)
        if data_type is None or tensor.datatype == "BF16":
            raise InvalidArgument(
                f"input tensor {echo(tensor.name)}: datatype {echo(tensor.datatype)} is not one of {_DATATYPES}"
            )
        self.data_type = data_type
        self.shape = tensor.shape
        self.raw_contents = b""


class TypedOipTensor(OipTensor):
    """An OIP input tensor sent in ``contents`` (its typed fields, under their inferd.v1 names)."""

    __slots__ = (
        "bool_contents",
        "bytes_contents",
        "fp32_contents",
        "fp64_contents",
        "int32_contents",
        "int64_contents",
        "uint32_contents",
        "uint64_contents",
    )
    has_contents = True

    def __init__(self, tensor: Any) -> None:
        super().__init__(tensor)
        contents = tensor.contents
        self.bool_contents = contents.bool_contents
        self.int32_contents = contents.int_contents
        self.int64_contents = contents.int64_contents
        self.uint32_contents = contents.uint_contents
        self.uint64_contents = contents.uint64_contents
        self.fp32_contents = contents.fp32_contents
        self.fp64_contents = contents.fp64_contents
        self.bytes_contents = contents.bytes_contents


def _tensor(tensor: Any) -> OipTensor:
    return TypedOipTensor(tensor) if tensor.HasField("contents") else OipTensor(tensor)


class OipMessage:
    """The two things server/api/inputs.InputDecoder reads of a request: its inputs and the output encoding."""

    __slots__ = ("inputs", "output_encoding")

    def __init__(self, inputs: list[OipTensor], output_encoding: int) -> None:
        self.inputs = inputs
        self.output_encoding = output_encoding


def parse(data: bytes) -> Any:
    try:
        return pb.ModelInferRequest.FromString(data)
    except DecodeError:
        raise InvalidArgument("the request is not a valid inference.ModelInferRequest") from None


def parameter_value(param: Any, key: str) -> ParamValue:
    which = param.WhichOneof("parameter_choice")
    if which is None:
        raise InvalidArgument(f"parameter {echo(key)} has no value")
    value: ParamValue = getattr(param, which)
    return value


def _version(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        raise InvalidArgument(
            f"model_version {echo(text)} is not a version number; "
            "send a version label as the request parameter 'version_label'"
        )
    return int(text)


def decode(
    new_id: RequestIds, message: Any, time_remaining: float | None
) -> tuple[InferRequest, OipMessage, list[bytes] | None]:
    """The request's routing and options, its inputs as OipTensors, and its raw_input_contents (or None)."""
    if not message.model_name:
        raise InvalidArgument("model_name is empty")
    version = _version(message.model_version)
    label: str | None = None
    routing_key = ""
    encoding = _MIRROR
    deadline = None if time_remaining is None else time.monotonic() + time_remaining
    parameters: dict[str, ParamValue] = {}
    for key, param in message.parameters.items() if message.parameters else ():
        value = parameter_value(param, key)
        if key not in ROUTING_PARAMETERS:
            parameters[key] = value
        elif key == "version_label":
            label = _text(key, value) or None
        elif key == "routing_key":
            routing_key = _text(key, value)
        elif key == "timeout":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidArgument("parameter 'timeout' must be a positive integer of microseconds")
            limit = time.monotonic() + value / 1e6
            deadline = limit if deadline is None else min(deadline, limit)
        elif not isinstance(value, bool):
            raise InvalidArgument("parameter 'binary_data_output' must be a bool")
        else:
            encoding = _RAW if value else _TYPED
    inputs = [_tensor(tensor) for tensor in message.inputs]
    payloads: list[bytes] | None = None
    raw = message.raw_input_contents
    if raw:
        if len(raw) != len(inputs):
            raise InvalidArgument(
                f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; send one per input, in order"
            )
        payloads = list(raw)
        for tensor in inputs:
            if tensor.has_contents:
                raise InvalidArgument(
                    f"input tensor {echo(tensor.name)} has contents while the request uses raw_input_contents; "
                    "send every input one way"
                )
    request = InferRequest(
        model=message.model_name,
        inputs={},
        id=message.id or new_id(),
        version=version,
        label=label,
        requested_outputs=tuple([output.name for output in message.outputs]) if message.outputs else (),
        parameters=parameters,
        deadline=deadline,
        routing_key=routing_key,
    )
    return request, OipMessage(inputs, encoding), payloads


def _text(key: str, value: ParamValue) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"parameter {echo(key)} must be a string")
    return value


def encode_response(
    request: InferRequest,
    version: int,
    outputs: Mapping[str, np.ndarray],
    output_order: Sequence[str],
    *,
    parameters: Mapping[str, ParamValue] | None = None,
) -> Any:
    """A ModelInferResponse: raw_output_contents unless the request's encoding is typed."""
    response = pb.ModelInferResponse(model_name=request.model, model_version=str(version), id=request.id)
    entries = []
    for name in request.requested_outputs or output_order:
        if name in outputs:
            array = np.asarray(outputs[name])
            entries.append((name, array, dtype_name_of(array)))
    # OIP has no typed field for FP16/BF16, and a response is either all raw or all typed
    typed = request.output_encoding == "typed" and all(dtype in _TYPED_OUT for _, _, dtype in entries)
    add = response.outputs.add  # filled in place, field by field: add()'s keyword form costs ~2x
    raw_out = response.raw_output_contents
    for name, array, dtype in entries:
        tensor = add()
        tensor.name = name
        tensor.datatype = dtype
        tensor.shape.extend(array.shape)
        if not typed:
            raw_out.append(encode_bytes_elements(array.reshape(-1).tolist()) if dtype == "BYTES" else raw_bytes(array))
        elif dtype == "BYTES":
            tensor.contents.bytes_contents.extend(
                x.encode() if isinstance(x, str) else bytes(x) for x in array.reshape(-1).tolist()
            )
        else:
            getattr(tensor.contents, _TYPED_OUT[dtype]).extend(array.reshape(-1).tolist())
    for key, value in (parameters or {}).items():
        fill_parameter(response.parameters[key], value)
    return response
