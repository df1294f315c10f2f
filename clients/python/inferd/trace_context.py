"""W3C trace context on outgoing calls, when the application traces with OpenTelemetry.

OpenTelemetry is optional and never imported here: an application that traces has imported
``opentelemetry.trace`` already (there can be no current span otherwise), so the SDK looks for it in
``sys.modules``. Without it a call costs one dict lookup; with it and a current, valid span, the global
propagator (``traceparent``/``tracestate``, and ``baggage`` by default; ``OTEL_PROPAGATORS``) writes its
headers into the call's metadata, so the server's spans join the caller's trace.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["with_trace_context"]

Metadata = tuple[tuple[str, str], ...]

_inject: Any = None  # opentelemetry.propagate.inject, imported on first use


def with_trace_context(metadata: Metadata | None) -> Metadata | None:
    """``metadata`` plus the current span's context, or ``metadata`` itself when there is none."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return metadata
    global _inject
    if _inject is None:
        from opentelemetry.propagate import inject

        _inject = inject
    carrier: dict[str, str] = {}
    _inject(carrier)
    if not carrier:
        return metadata
    # the current context wins over the same keys in the client's fixed metadata
    kept = tuple(pair for pair in metadata or () if pair[0].lower() not in carrier)
    return kept + tuple(carrier.items())
