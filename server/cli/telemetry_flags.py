"""``inferd serve``'s observability flags (docs/operations.md, "Observing inferd") and the ``OTEL_*`` variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from server.telemetry.options import DEFAULT_METRICS_PORT, TelemetryOptions


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, not {value}")
    return value


def add_telemetry_flags(serve: argparse.ArgumentParser) -> None:
    """Metrics endpoint, access log; tracing is configured by the standard OTEL_* environment variables."""
    group = serve.add_argument_group("observability (metrics, access log; tracing: OTEL_* variables)")
    group.add_argument(
        "--metrics-port",
        type=_port,
        default=DEFAULT_METRICS_PORT,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default %(default)s; 0 = any free port)",
    )
    group.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address of the metrics endpoint (default %(default)s, like the admin port; 0.0.0.0 in a pod)",
    )
    group.add_argument("--no-metrics", action="store_true", help="serve no metrics endpoint")
    group.add_argument(
        "--metrics-port-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the metrics endpoint's port to PATH once it listens (with --metrics-port 0)",
    )
    # access log:


def otlp_metrics_endpoint(env: Mapping[str, str]) -> str | None:
    """Where to push metrics over OTLP/gRPC: only when the OTEL_* variables ask for it."""
    if env.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return None
    endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        return endpoint
    if env.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "otlp":
        return "http://localhost:4317"  # OTLP/gRPC's default endpoint
    return None


def _interval_s(env: Mapping[str, str]) -> float:
    raw = env.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")
    try:
        millis = float(raw)
    except ValueError:
        raise SystemExit(f"inferd: OTEL_METRIC_EXPORT_INTERVAL must be milliseconds, not {raw!r}") from None
    if millis <= 0:
        raise SystemExit(f"inferd: OTEL_METRIC_EXPORT_INTERVAL must be more than 0, not {raw!r}")
    return millis / 1000


def telemetry_options(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> TelemetryOptions:
    env = os.environ if env is None else env
    access_log = None
    tracing = None
    # tracing:
    return TelemetryOptions(
        metrics_port=None if args.no_metrics else args.metrics_port,
        metrics_host=args.metrics_host,
        otlp_metrics_endpoint=otlp_metrics_endpoint(env),
        otlp_metrics_interval_s=_interval_s(env),
        tracing=tracing,
        access_log=access_log,
    )
