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

from inferd.tensors import TensorError, TensorInfo, decode_tensor, describe_tensor
from inferd.v1 import tensor_pb2
from server.api.codec import AnyPredictRequest
from server.core.echo import echo
from server.core.errors import InvalidArgument
from server.core.types import InferRequest
from server.models.validation import Declared, InputValidator, format_dims

#: Elements a request may hold across its inputs, and the most one shape may span counting only its
#: non-zero dimensions (the default of ``inferd serve --max-request-elements``).
DEFAULT_MAX_REQUEST_ELEMENTS = 64 * 1024 * 1024
#: Elements of per-element work (BYTES, typed fields) above which a request is decoded on a thread.
OFFLOAD_ELEMENTS = 4096
#: Large decodes running at once, server-wide.
DECODE_CONCURRENCY = 2

_UNSPECIFIED = tensor_pb2.TENSOR_ENCODING_UNSPECIFIED
Payloads = Sequence[memoryview] | None


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
        if infos and not any_raw and message.output_encoding == _UNSPECIFIED:
            request.output_encoding = "typed"  # mirror a request written in typed fields (a person with grpcurl)
        return request, rows

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
