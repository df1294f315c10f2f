"""Turns :class:`~server.telemetry.options.TelemetryOptions` into running exporters and call observers.

- Metrics: an OpenTelemetry ``MeterProvider`` (resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``)
  with the OTel Prometheus reader behind a ``/metrics`` HTTP endpoint and, when the ``OTEL_EXPORTER_OTLP_*``
  variables ask for it, a periodic OTLP/gRPC push. Each collection adds the server's own metrics
  (:mod:`server.telemetry.metrics`, built on the event loop's thread from the live counters) to what the
  SDK's instruments observed (process and device gauges, :mod:`server.telemetry.process`).
- Calls: the observers that need one call's record (tracing, the access log; :mod:`server.telemetry.calls`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, start_http_server

from server.telemetry.access_log import AccessLog
from server.telemetry.calls import CallObserver, CallObservers
from server.telemetry.endpoint_tls import ReloadingContext
from server.telemetry.metrics import MetricsSource
from server.telemetry.options import TelemetryOptions
from server.telemetry.process import register_process_gauges
from server.telemetry.tracing import Tracing

log = logging.getLogger("inferd.telemetry")
#: a scrape gives up on the event loop after this long (it is busy beyond reason, or stopping)
COLLECT_TIMEOUT_S = 5.0


class MetricsEndpointError(Exception):
    """The metrics port cannot be bound."""


def service_resource(version: str) -> Resource:
    """``service.name`` inferd unless ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` say otherwise."""
    return Resource.create({"service.name": "inferd", "service.version": version}).merge(
        OTELResourceDetector().detect()
    )


class _ServerMetrics:
    """Snapshots the server's metrics on the event loop's thread, for exporters that run on their own."""

    def __init__(self, source: MetricsSource, loop: asyncio.AbstractEventLoop, version: str) -> None:
        self._source = source
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._scope = InstrumentationScope("inferd", version)

    def snapshot(self) -> list[Metric]:
        if threading.get_ident() == self._loop_thread:
            return self._source.collect()
        result: concurrent.futures.Future[list[Metric]] = concurrent.futures.Future()

        def collect() -> None:
            try:
                result.set_result(self._source.collect())
            except BaseException as exc:  # reported to the exporter's thread
                result.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(collect)
            return result.result(COLLECT_TIMEOUT_S)
        except (RuntimeError, concurrent.futures.TimeoutError):  # the loop is closed, or stuck
            log.warning("metrics collection skipped: the event loop did not answer in %gs", COLLECT_TIMEOUT_S)
            return []

    def merged(self, data: MetricsData | None, resource: Resource) -> MetricsData:
        """The SDK's collection with the server's own metrics added as one more instrumentation scope."""
        ours = ScopeMetrics(self._scope, self.snapshot(), "")
        if data is None or not data.resource_metrics:
            return MetricsData([ResourceMetrics(resource, [ours], "")])
        first, *rest = data.resource_metrics
        return MetricsData([ResourceMetrics(first.resource, [*first.scope_metrics, ours], first.schema_url), *rest])


class _PrometheusReader(PrometheusMetricReader):
    def __init__(self, metrics: _ServerMetrics, resource: Resource, registry: CollectorRegistry) -> None:
        super().__init__(scope_info_enabled=False, registry=registry)
        self._server_metrics = metrics
        self._resource = resource

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        super()._receive_metrics(self._server_metrics.merged(metrics_data, self._resource), timeout_millis, **kwargs)


class _MergingExporter(MetricExporter):
    """An OTLP exporter that also sends the server's own metrics."""

    def __init__(self, inner: MetricExporter, metrics: _ServerMetrics, resource: Resource) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality)
        self._inner = inner
        self._server_metrics = metrics
        self._resource = resource

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return self._inner.export(self._server_metrics.merged(metrics_data, self._resource), timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis, **kwargs)


def _tls_arguments(options: TelemetryOptions) -> dict[str, Any]:
    """start_http_server's TLS arguments (none for plain HTTP)."""
    tls = options.metrics_tls
    if tls is None:
        return {}
    return {
        "certfile": str(tls.cert),
        "keyfile": str(tls.key),
        "client_cafile": None if tls.client_ca is None else str(tls.client_ca),
        "client_auth_required": tls.client_ca is not None,
    }


class Telemetry:
    """The server's exporters and observers: built before the servicer, started with the server."""

    def __init__(self, options: TelemetryOptions, service_version: str) -> None:
        self.options = options
        self.version = service_version
        self.resource = service_resource(service_version)
        self._tracing: Tracing | None = None
        self._access_log: AccessLog | None = None
        if options.tracing is not None:
            self._tracing = Tracing(options.tracing, self.resource)
        if options.access_log is not None:
            self._access_log = AccessLog(options.access_log)
        self._observers: Sequence[CallObserver] = [o for o in (self._tracing, self._access_log) if o is not None]
        #: handed to the servicer; empty when neither tracing nor the access log is on
        self.observers = CallObservers(self._observers)
        self._provider: MeterProvider | None = None
        self._http: Any = None
        #: the bound metrics port (0 until started, or when there is no endpoint)
        self.metrics_port = 0

    def access_log_dropped(self) -> int:
        """Access-log lines lost so far (0 without an access log)."""
        return self._access_log.dropped if self._access_log is not None else 0

    def start(self, source: MetricsSource) -> None:
        """Bind the metrics endpoint and start the OTLP push (on the event loop's thread)."""
        options = self.options
        if options.metrics_port is None and options.otlp_metrics_endpoint is None:
            return
        metrics = _ServerMetrics(source, asyncio.get_running_loop(), self.version)
        readers: list[Any] = []
        registry = CollectorRegistry(auto_describe=False)
        if options.metrics_port is not None:
            readers.append(_PrometheusReader(metrics, self.resource, registry))
        if options.otlp_metrics_endpoint is not None:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter = _MergingExporter(
                OTLPMetricExporter(endpoint=options.otlp_metrics_endpoint), metrics, self.resource
            )
            readers.append(
                PeriodicExportingMetricReader(exporter, export_interval_millis=options.otlp_metrics_interval_s * 1000)
            )
            log.info(
                "metrics pushed over OTLP to %s every %gs",
                options.otlp_metrics_endpoint,
                options.otlp_metrics_interval_s,
            )
        self._provider = MeterProvider(metric_readers=readers, resource=self.resource)
        register_process_gauges(self._provider.get_meter("inferd.process", self.version))
        if options.metrics_port is not None:
            try:
                self._http, _thread = start_http_server(
                    options.metrics_port, options.metrics_host, registry=registry, **_tls_arguments(options)
                )
            except OSError as exc:
                raise MetricsEndpointError(
                    f"cannot serve metrics on {options.metrics_host}:{options.metrics_port}: {exc.strerror or exc} "
                    "(another server on the port? pick one with --metrics-port, or --no-metrics)"
                ) from None
            self.metrics_port = self._http.server_port
            if options.metrics_tls is not None:
                ReloadingContext(options.metrics_tls).install(self._http.socket.context)
            scheme = "http" if options.metrics_tls is None else "https"
            log.info("metrics on %s://%s:%d/metrics", scheme, options.metrics_host, self.metrics_port)

    async def stop(self) -> None:
        """Close the endpoint, push a last OTLP export, flush spans and log lines (off the event loop,
        which the exporters' threads may be waiting on)."""
        if self._http is not None:
            http, self._http = self._http, None
            await asyncio.to_thread(http.shutdown)
            http.server_close()
        if self._provider is not None:
            provider, self._provider = self._provider, None
            await asyncio.to_thread(provider.shutdown)
        for observer in (self._tracing, self._access_log):
            if observer is not None:
                await asyncio.to_thread(observer.close)
