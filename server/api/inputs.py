"""A request's input tensors → arrays, bounded before they are paid for.

Each tensor's declared dtype, shape and contents size are checked first (no element is read), then
the whole request against the routed model's signature and the per-request element cap; only then
are elements decoded. Raw fixed-width tensors become zero-copy views; BYTES and typed fields, which
cost work per element, are decoded on a worker thread when large, a few at a time server-wide, so
they bound the memory they hold at once and leave the event loop to other models' calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from inferd.tensors import NUMPY_DTYPES, TensorError, TensorInfo, decode_tensor, describe_tensor
from inferd.v1 import inference_pb2, tensor_pb2
from server.api.codec import AnyPredictRequest
from server.core.echo import echo
from server.core.errors import InvalidArgument
from server.core.types import InferRequest
from server.models.validation import Declared, InputValidator, KnownLayout, format_dims

frombuffer = np.frombuffer

#: Elements a request may hold across its inputs, and the most one shape may span counting only its
#: non-zero dimensions (the default of ``inferd serve --max-request-elements``).
DEFAULT_MAX_REQUEST_ELEMENTS = 64 * 1024 * 1024
#: Elements of per-element work (BYTES, typed fields) above which a request is decoded on a thread.
OFFLOAD_ELEMENTS = 4096
#: Large decodes running at once, server-wide.
DECODE_CONCURRENCY = 2
#: Accepted request layouts remembered per model version (InputValidator.layouts).
MAX_KNOWN_LAYOUTS = 256
_PROTOBUF_REQUESTS = (inference_pb2.PredictRequest, inference_pb2.PredictStreamRequest)

_UNSPECIFIED = tensor_pb2.TENSOR_ENCODING_UNSPECIFIED
Payloads = Sequence[bytes | memoryview] | None


class InputDecoder:
    """Checks, then decodes, the inputs of one request at a time (one per servicer)."""

    def __init__(
        self,
        max_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS,
        *,
        offload_elements: int = OFFLOAD_ELEMENTS,
        concurrency: int = DECODE_CONCURRENCY,
    ) -> None:
        self.max_elements = max_elements
        self.offload_elements = offload_elements
        self._slots = asyncio.Semaphore(concurrency)

    def describe(self, tensors: Sequence[tensor_pb2.Tensor], payloads: Payloads = None) -> dict[str, TensorInfo]:
        """Every tensor's declared dtype, shape and size, checked; InvalidArgument names the tensor."""
        infos: dict[str, TensorInfo] = {}
        total = 0
        for index, tensor in enumerate(tensors):
            name = tensor.name
            if name in infos:
                raise InvalidArgument(f"input {echo(name)} is sent twice")
            try:
                info = describe_tensor(tensor, None if payloads is None else payloads[index])
            except TensorError as exc:
                raise InvalidArgument(f"input tensor {echo(name)}: {exc.detail}") from None
            if info.extent > self.max_elements:
                raise InvalidArgument(
                    f"input tensor {echo(name)}: shape {format_dims(info.shape)} spans more than the "
                    f"{self.max_elements} elements a request may hold (--max-request-elements)"
                )
            total += info.count
            infos[name] = info
        if total > self.max_elements:
            raise InvalidArgument(
                f"the request's inputs hold {total} elements, more than the {self.max_elements} a request "
                "may hold (--max-request-elements)"
            )
        return infos

    async def decode(
        self,
        message: AnyPredictRequest,
        request: InferRequest,
        validator: InputValidator,
        payloads: Payloads = None,
        *,
        enforce_max_batch: bool = True,
    ) -> tuple[InferRequest, int]:
        """``request`` with its inputs decoded (in place), and its batch size in rows (InputValidator.check).

        ``payloads``: each input's raw_contents held apart from ``message`` (codec.parse_request).
        """
        tensors = message.inputs
        layout = None
        if payloads is None or len(payloads) == len(tensors):
            layout, raws = self._layout(
                tensors, payloads, type(message) in _PROTOBUF_REQUESTS, request, enforce_max_batch
            )
            known = validator.layouts.get(layout)
            if known is not None:
                rows, described = known
                request.inputs = {
                    name: frombuffer(raw, dtype).reshape(shape)
                    for (name, dtype, shape), raw in zip(described, raws, strict=True)
                }
                return request, rows
            payloads = raws  # read once: the checks and the decode below use them
        infos = self.describe(tensors, payloads)
        declared: dict[str, Declared] = {}
        work = 0  # elements that cost per-element work to decode (BYTES, typed fields)
        any_raw = False
        for name, info in infos.items():
            declared[name] = (info.dtype, info.shape)
            if info.raw_size:
                any_raw = True
                if info.dtype == "BYTES":
                    work += info.count
            else:
                work += info.count
        rows = validator.check(declared, request.requested_outputs, enforce_max_batch=enforce_max_batch)
        if work <= self.offload_elements:
            inputs = _decode_all(tensors, infos, payloads)
        else:
            inputs = await self._off_loop(tensors, infos, payloads)
        request.inputs = inputs  # the request was made for this call (types.InferRequest)
        if layout is not None and infos and work == 0 and all(info.raw_size for info in infos.values()):
            _remember(validator.layouts, layout, rows, infos)
        if infos and not any_raw and message.output_encoding == _UNSPECIFIED:
            request.output_encoding = "typed"  # mirror a request written in typed fields (a person with grpcurl)
        return request, rows

    def _layout(
        self,
        tensors: Sequence[tensor_pb2.Tensor],
        payloads: Payloads,
        protobuf: bool,
        request: InferRequest,
        enforce_max_batch: bool,
    ) -> tuple[tuple[object, ...], list[bytes | memoryview]]:
        """What decides whether a request passes the checks: per input its name, data type, shape and raw
        size, and whatever else it carries -- a protobuf Tensor's serialised size (a typed or unknown field
        makes it differ), an OIP adapter's ``has_contents`` -- and the request's options that the checks
        read. Also the inputs' raw contents, read once."""
        raws: list[bytes | memoryview] = []
        parts: list[object] = [self.max_elements, enforce_max_batch, request.requested_outputs]
        for index, tensor in enumerate(tensors):
            raw = tensor.raw_contents if payloads is None else payloads[index]
            carries = tensor.ByteSize() if protobuf else tensor.has_contents  # type: ignore[attr-defined]
            parts.append((tensor.name, tensor.data_type, tuple(tensor.shape), len(raw), carries))
            raws.append(raw)
        return tuple(parts), raws

    async def _off_loop(
        self, tensors: Sequence[tensor_pb2.Tensor], infos: dict[str, TensorInfo], payloads: Payloads
    ) -> dict[str, np.ndarray]:
        """Decode on a worker thread; a caller that leaves meanwhile does not free its place early."""
        await self._slots.acquire()
        future = asyncio.get_running_loop().run_in_executor(None, _decode_all, tensors, infos, payloads)
        future.add_done_callback(self._decoded)
        return await asyncio.shield(future)

    def _decoded(self, future: asyncio.Future[dict[str, np.ndarray]]) -> None:
        self._slots.release()
        if not future.cancelled():
            future.exception()  # read, so a decode whose caller left is not logged as "never retrieved"


def _remember(
    layouts: dict[tuple[object, ...], KnownLayout],
    layout: tuple[object, ...],
    rows: int,
    infos: Mapping[str, TensorInfo],
) -> None:
    """Keep an accepted layout of raw fixed-width inputs; a few hundred at most (a client sending ever
    new shapes only empties the memo, never grows it)."""
    if len(layouts) >= MAX_KNOWN_LAYOUTS:
        layouts.clear()
    layouts[layout] = (rows, tuple((name, NUMPY_DTYPES[info.dtype], info.shape) for name, info in infos.items()))


def _decode_all(
    tensors: Sequence[tensor_pb2.Tensor], infos: Mapping[str, TensorInfo], payloads: Payloads
) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        raw = None if payloads is None else payloads[index]
        try:
            inputs[tensor.name] = decode_tensor(tensor, infos[tensor.name], raw)
        except TensorError as exc:
            raise InvalidArgument(f"input tensor {echo(tensor.name)}: {exc.detail}") from None
    return inputs
