"""Plain data passed between the layers: no protobuf below the codec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

ParamValue = bool | int | float | str


class SlotState(str, Enum):
    """A model version's lifecycle: LOADING → WARMING → READY → DRAINING → UNLOADED, or FAILED."""

    LOADING = "LOADING"
    WARMING = "WARMING"
    READY = "READY"
    DRAINING = "DRAINING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"


@dataclass(slots=True)
class InferRequest:
    """A decoded, not yet validated prediction request: made once per call (codec.decode_request), its
    ``inputs`` and ``output_encoding`` filled in place once they are decoded (api/inputs.py) — not
    frozen, since a copy per call is measurable on the Predict hot path."""

    model: str
    inputs: Mapping[str, np.ndarray]
    id: str
    version: int | None = None
    label: str | None = None
    requested_outputs: tuple[str, ...] = ()
    parameters: Mapping[str, ParamValue] = field(default_factory=dict)
    #: Absolute time.monotonic() after which the answer is useless; None = no deadline.
    deadline: float | None = None
    #: "raw" or "typed": how outputs are encoded in the response.
    output_encoding: str = "raw"
    routing_key: str = ""
    chunk_rows: int = 0
