"""Checks inputs against a model's signature, with messages that name the tensor.

The server checks what a request *declares* (dtype and shape, read from the message) before any
element is decoded, so a request the model cannot take costs nothing to refuse. Built once per model
version so the per-request work is a few dict lookups and tuple compares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engines.base import TensorSig
from inferd.tensors import NUMPY_DTYPES, dtype_name_of
from server.core.echo import echo
from server.core.errors import InvalidArgument
from server.models.config import ModelSpec

#: numpy dtype string ("<f4") → inferd dtype name, for a one-lookup dtype check.
_DTYPE_NAME: dict[str, str] = {dt.str: name for name, dt in NUMPY_DTYPES.items() if name != "BYTES"}
#: Dimensions quoted in a message before it is cut short.
_QUOTED_DIMS = 8

#: An input as declared: (inferd dtype name, shape).
Declared = tuple[str | None, tuple[int, ...]]
#: A request layout already accepted: its rows, and each input's name, numpy dtype and shape.
KnownLayout = tuple[int, tuple[tuple[str, "np.dtype[Any]", tuple[int, ...]], ...]]


def format_dims(dims: Sequence[int]) -> str:
    """Dimensions for a message, cut short after a few (a client may send thousands)."""
    quoted = [str(d) for d in dims[:_QUOTED_DIMS]]
    if len(dims) > _QUOTED_DIMS:
        quoted.append(f"... ({len(dims)} dimensions)")
    return "[" + ", ".join(quoted) + "]"


def _count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def declared_of(array: np.ndarray) -> Declared:
    """What a decoded array declares, in the form :meth:`InputValidator.check` takes."""
    dtype = dtype_name_of(array) if array.dtype.kind in "OSU" else _DTYPE_NAME.get(array.dtype.str)
    return dtype, array.shape


class InputValidator:
    def __init__(self, spec: ModelSpec) -> None:
        self.model = spec.name
        self.batched = spec.max_batch_size > 0
        self.max_batch_size = spec.max_batch_size
        self._inputs: dict[str, TensorSig] = {sig.name: sig for sig in spec.signature.inputs}
        self._outputs = tuple(sig.name for sig in spec.signature.outputs)
        self.output_names = self._outputs
        self._output_set = frozenset(self._outputs)
        #: a generative model takes one prompt per stream: refuse more before decoding them
        self._single = spec.signature.inputs[0].name if "generative" in spec.engines and spec.signature.inputs else ""
        #: request layouts this version already accepted (server/api/inputs.py KnownLayouts): a request
        #: laid out like an earlier good one is decoded without being checked again
        self.layouts: dict[tuple[object, ...], KnownLayout] = {}

    def validate(
        self,
        inputs: Mapping[str, np.ndarray],
        requested_outputs: Sequence[str],
        *,
        enforce_max_batch: bool = True,
    ) -> int:
        """:meth:`check` for decoded arrays."""
        declared = {name: declared_of(array) for name, array in inputs.items()}
        return self.check(declared, requested_outputs, enforce_max_batch=enforce_max_batch)

    def check(
        self,
        inputs: Mapping[str, Declared],
        requested_outputs: Sequence[str],
        *,
        enforce_max_batch: bool = True,
    ) -> int:
        """Raise InvalidArgument on any mismatch; return the batch size in rows (1 for unbatched models)."""
        if len(inputs) != len(self._inputs) or any(name not in self._inputs for name in inputs):
            self._explain_names(inputs)
        rows = -1
        first = ""
        for name, sig in self._inputs.items():
            dtype, shape = inputs[name]
            if dtype != sig.dtype:
                raise InvalidArgument(f"input '{name}' of model '{self.model}': expected {sig.dtype}, received {dtype}")
            if not sig.accepts_shape(shape):
                raise InvalidArgument(
                    f"input '{name}' of model '{self.model}': expected shape {format_dims(sig.dims)}, "
                    f"received {format_dims(shape)}"
                )
            if self.batched:
                if rows == -1:
                    rows, first = shape[0], name
                elif shape[0] != rows:
                    raise InvalidArgument(
                        f"inputs of model '{self.model}' disagree on the batch size: "
                        f"'{first}' has {rows} rows, '{name}' has {shape[0]}"
                    )
        if self._single and (count := _count(inputs[self._single][1])) != 1:
            raise InvalidArgument(
                f"input '{self._single}' of model '{self.model}' must hold exactly one prompt "
                f"(one stream per prompt), got {count}"
            )
        if self.batched:
            if rows == 0:
                raise InvalidArgument(f"input '{first}' of model '{self.model}': the batch has 0 rows")
            if enforce_max_batch and rows > self.max_batch_size:
                raise InvalidArgument(
                    f"input '{first}' of model '{self.model}': {rows} rows exceed max_batch_size "
                    f"{self.max_batch_size} (split the request or use PredictStream)"
                )
        for out in requested_outputs:
            if out not in self._output_set:
                raise InvalidArgument(
                    f"requested output {echo(out)} is not an output of model '{self.model}' "
                    f"(outputs: {', '.join(self._outputs)})"
                )
        return rows if self.batched else 1

    def _explain_names(self, inputs: Mapping[str, object]) -> None:
        for name in inputs:
            if name not in self._inputs:
                raise InvalidArgument(
                    f"input {echo(name)} is not an input of model '{self.model}' (inputs: {', '.join(self._inputs)})"
                )
        for name, sig in self._inputs.items():
            if name not in inputs:
                raise InvalidArgument(
                    f"input '{name}' ({sig.dtype} {format_dims(sig.dims)}) of model '{self.model}' is missing"
                )
