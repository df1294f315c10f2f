"""The one stream-message type: what an engine yields per step and what PredictStream sends.

A generative engine returns one :class:`StreamPart` per stream per step; the stream scheduler buffers
them for the reader and, for a reader that fell behind, merges consecutive parts into one
(:meth:`StreamPart.merged`); a python ``infer_stream`` model's yields become parts too. The servicer
turns each part into one ``PredictStreamResponse``: ``outputs`` by name, ``final`` on the last one,
``parameters`` as response parameters. It lives in ``engines/`` because engines build it and engines
never import the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

ParamValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class StreamPart:
    """One message's worth of a stream: outputs by name, whether it is the last, response parameters."""

    outputs: Mapping[str, np.ndarray]
    final: bool = False
    parameters: Mapping[str, ParamValue] = field(default_factory=dict)

    @staticmethod
    def merged(parts: Sequence[StreamPart]) -> StreamPart:
        """Consecutive parts of one stream as one message, as if the steps had made them together.

        An output is concatenated along its first axis, except a one-element BYTES output (generated
        text), whose pieces are joined into one element. ``final`` and the parameters are the last
        part's (the parameters of earlier parts are kept unless a later part overrides them).
        """
        if len(parts) == 1:
            return parts[0]
        names: dict[str, None] = {}
        parameters: dict[str, ParamValue] = {}
        for part in parts:
            names.update(dict.fromkeys(part.outputs))
            parameters.update(part.parameters)
        outputs = {name: _join([p.outputs[name] for p in parts if name in p.outputs]) for name in names}
        return StreamPart(outputs, parts[-1].final, parameters)


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    if all(a.dtype == object and a.size == 1 for a in arrays):
        joined = np.empty(1, dtype=object)
        joined[0] = b"".join(_as_bytes(a.reshape(-1)[0]) for a in arrays)
        return joined
    return np.concatenate([np.atleast_1d(a) for a in arrays], axis=0)


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")
