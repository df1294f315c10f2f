"""The sampling decision for one call, made before any OpenTelemetry object exists.

Tracing at 1 % must cost the other 99 % almost nothing, so the decision reads the W3C ``traceparent``
straight from the gRPC metadata pairs and compares numbers: no propagator, context, sampler result or
span for a call that is not sampled. It is the decision the SDK's samplers would make
(``opentelemetry.sdk.trace.sampling``: ``ParentBased`` with its default delegates, ``TraceIdRatioBased``,
``ALWAYS_ON``/``ALWAYS_OFF``), and it parses ``traceparent`` exactly as the W3C propagator does
(tests/unit/test_trace_context.py checks both against the SDK). Sampled calls then go through the real
propagators (:data:`PAIRS_GETTER`) to get ``tracestate`` and baggage.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.propagators.textmap import Getter

#: W3C trace context, as ``opentelemetry.trace.propagation.tracecontext`` matches it
_TRACEPARENT_RE = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")
_TRACEPARENT_MAX_LENGTH = 512
#: the same, without surrounding blanks or a future version's extra fields
_CANONICAL_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
#: a ratio sampler looks at the trace id's low 64 bits (TraceIdRatioBased.TRACE_ID_LIMIT)
_LOW_BITS = 64
_ALL = 1 << _LOW_BITS

#: the sampler names of OTEL_TRACES_SAMPLER that inferd implements (jaeger_remote, xray: not)
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def traceparent_of(metadata: Sequence[tuple[str, Any]]) -> str | None:
    """The first ``traceparent`` value of the call's metadata (gRPC keys are lower case)."""
    for key, value in metadata:
        if key == "traceparent":
            return value if isinstance(value, str) else None
    return None


_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16
#: hex digits whose low bit is set: the ``sampled`` trace flag
_ODD = frozenset("13579bdf")


def _valid_parts(header: str) -> tuple[str, str, str] | None:
    """(trace id, span id, flags) in hex where the W3C propagator finds a valid parent, else None."""
    match = _CANONICAL_RE.match(header)  # what every tracer sends; the general pattern is twice as slow
    if match is not None:
        version, trace_hex, span_hex, flags = match.groups()
        rest = None
    else:
        match = _TRACEPARENT_RE.match(header) if len(header) <= _TRACEPARENT_MAX_LENGTH else None
        if match is None:
            return None
        version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (rest and version == "00") or trace_hex == _NO_TRACE or span_hex == _NO_SPAN:
        return None
    return trace_hex, span_hex, flags


@dataclass(frozen=True, slots=True)
class RemoteParent:
    trace_id: int
    span_id: int
    sampled: bool


def parse_traceparent(header: str) -> RemoteParent | None:
    """A valid remote parent, or None where the W3C propagator would find none."""
    parts = _valid_parts(header)
    if parts is None:
        return None
    trace_hex, span_hex, flags = parts
    return RemoteParent(int(trace_hex, 16), int(span_hex, 16), flags[1] in _ODD)


def ratio_bound(sampler: str, arg: float | None) -> int:
    """The root sampler as a bound on the trace id's low 64 bits: sampled when ``low < bound``."""
    root = sampler.removeprefix("parentbased_")
    if root == "always_on":
        return _ALL
    if root == "always_off":
        return 0
    rate = 1.0 if arg is None else arg
    return round(rate * _ALL)  # TraceIdRatioBased.get_bound_for_rate


class SamplingDecider:
    """Decides a call's sampling from its ``traceparent`` and the configured sampler.

    :meth:`decide` answers None (not sampled) or the trace id a new root span should take (0 when the
    span continues its remote parent's trace); for a root, that id was drawn here, so the ratio that
    chose it and the id the span carries agree, as with the SDK's own ``TraceIdRatioBased``.
    """

    __slots__ = ("_bound", "_parent_based")

    def __init__(self, sampler: str, arg: float | None) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}")
        self._parent_based = sampler.startswith("parentbased_")
        self._bound = ratio_bound(sampler, arg)

    def decide(self, metadata: Sequence[tuple[str, Any]]) -> int | None:
        header = traceparent_of(metadata)
        parts = None if header is None else _valid_parts(header)
        if parts is None:
            return self._new_root()
        if self._parent_based:  # ParentBased's defaults: follow a remote parent's sampled flag
            return 0 if parts[2][1] in _ODD else None
        return 0 if int(parts[0][16:], 16) < self._bound else None  # the trace id's low 64 bits

    def _new_root(self) -> int | None:
        low = random.getrandbits(_LOW_BITS)
        if low >= self._bound:
            return None
        high = random.getrandbits(128 - _LOW_BITS)
        return (high << _LOW_BITS) | low or 1  # never the invalid id 0


class _PairsGetter(Getter[Sequence[tuple[str, Any]]]):
    """Reads gRPC metadata pairs for the W3C propagators (several values per key are allowed)."""

    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [name for name, _value in carrier]


PAIRS_GETTER = _PairsGetter()
