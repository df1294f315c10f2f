"""What ``inferd serve`` was told to observe: the metrics endpoint, tracing, the access log.

Plain settings, no behaviour; built by ``server/cli/telemetry_flags.py`` from flags and the standard
``OTEL_*`` environment variables, and turned into exporters and observers by ``server/telemetry/setup.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.telemetry.access_log import AccessLogOptions
    from server.telemetry.tracing import TracingOptions

#: The Prometheus endpoint's default port (Triton's metrics port too).
DEFAULT_METRICS_PORT = 8002


@dataclass(frozen=True, slots=True)
class EndpointTls:
    """HTTPS for the metrics endpoint (the gRPC ports' ``--tls-*`` files; server/telemetry/endpoint_tls.py)."""

    cert: Path
    key: Path
    #: set: scrapers must present a client certificate this CA signed (the ports require mTLS)
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class TelemetryOptions:
    #: serve Prometheus' ``/metrics`` on this port (0 = any free port); None = no endpoint
    metrics_port: int | None = None
    #: the endpoint's address; loopback unless told otherwise, like the admin port
    metrics_host: str = "127.0.0.1"
    #: serve the endpoint over HTTPS (app.py sets it from ``--tls-*``); None = plain HTTP
    metrics_tls: EndpointTls | None = None
    #: push metrics over OTLP every ``otlp_metrics_interval_s`` (``OTEL_EXPORTER_OTLP_*`` set); None = off
    otlp_metrics_endpoint: str | None = None
    otlp_metrics_interval_s: float = 60.0
    #: spans for sampled calls (``OTEL_TRACES_EXPORTER``/``OTEL_EXPORTER_OTLP_*``); None = no tracing at all
    tracing: TracingOptions | None = None
    #: JSON lines per sampled call, every failure (``--access-log``); None = off
    access_log: AccessLogOptions | None = None
