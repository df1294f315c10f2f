"""``inferd serve``'s observability flags (docs/operations.md, "Observing inferd") and the ``OTEL_*`` variables."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from server.telemetry.options import DEFAULT_METRICS_PORT, TelemetryOptions

if TYPE_CHECKING:
    from server.telemetry.access_log import AccessLogOptions
    from server.telemetry.tracing_options import TracingOptions


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, not {value}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text!r}") from None
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text}")
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
    group.add_argument(
        "--access-log",
        default=None,
        metavar="PATH|-",
        help="write one JSON line per call to PATH (appended to; not reopened on SIGHUP: rotate with "
        "copytruncate) or to stdout with -; every failed call is logged, OK calls as sampled (default: no log)",
    )
    group.add_argument(
        "--access-log-sample-rate",
        type=_share,
        default=None,
        metavar="R",
        help="share of OK calls the access log keeps, 0 to 1 (default 1 = every call; e.g. 0.01 on a busy server)",
    )


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


def _tracing(env: Mapping[str, str]) -> TracingOptions | None:
    """Tracing as the standard OTEL_* variables ask for it (off unless they do); logged when on."""
    from server.telemetry.tracing_options import TracingConfigError, TracingOptions

    try:
        options = TracingOptions.from_environment(env)
    except TracingConfigError as exc:
        raise SystemExit(f"inferd: tracing: {exc}") from None
    if options is not None:
        logging.getLogger("inferd.telemetry").info("tracing on: %s", options.describe())
    return options


def _access_log(args: argparse.Namespace) -> AccessLogOptions | None:
    """``--access-log`` as options, its file checked now so a bad path fails before the server starts."""
    if args.access_log is None:
        if args.access_log_sample_rate is not None:
            raise SystemExit("inferd: --access-log-sample-rate needs --access-log PATH (or - for stdout)")
        return None
    from server.telemetry.access_log import AccessLogError, AccessLogOptions, check_destination

    rate = 1.0 if args.access_log_sample_rate is None else args.access_log_sample_rate
    try:
        options = AccessLogOptions(args.access_log, rate)
        check_destination(options)
    except AccessLogError as exc:
        raise SystemExit(f"inferd: --access-log: {exc}") from None
    return options


def telemetry_options(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> TelemetryOptions:
    env = os.environ if env is None else env
    access_log = _access_log(args)
    tracing = _tracing(env)
    return TelemetryOptions(
        metrics_port=None if args.no_metrics else args.metrics_port,
        metrics_host=args.metrics_host,
        otlp_metrics_endpoint=otlp_metrics_endpoint(env),
        otlp_metrics_interval_s=_interval_s(env),
        tracing=tracing,
        access_log=access_log,
    )
