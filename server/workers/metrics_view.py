"""The supervisor's one /metrics: every serving worker's endpoint scraped and merged
(server/workers/aggregate_metrics.py) on the user's ``--metrics-host``/``--metrics-port``, over HTTPS with
``--tls-*`` exactly as a single server's endpoint (server/app.py, metrics_endpoint_tls). The workers' own
endpoints stay plain HTTP on 127.0.0.1: only the supervisor scrapes them."""

from __future__ import annotations

import argparse
import ssl
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from server.telemetry.endpoint_tls import make_context
from server.telemetry.options import EndpointTls
from server.workers.aggregate_metrics import MetricsEndpoint, WorkerMetrics
from server.workers.ports import WorkerStartError

if TYPE_CHECKING:
    from server.workers.supervisor import Supervisor


def _port(path: str | None) -> int:
    text = Path(path).read_text().strip() if path is not None and Path(path).exists() else ""
    return int(text) if text.isdigit() else 0


def endpoint_tls(args: argparse.Namespace) -> EndpointTls | None:
    """``--tls-*`` → the merged endpoint's HTTPS (None: plain HTTP). WorkerStartError when the flags or the
    files cannot be used (a single server stops on them too)."""
    from server.app import metrics_endpoint_tls
    from server.cli.security_flags import SecurityFlagError, tls_options

    try:
        tls = tls_options(args)
    except SecurityFlagError as exc:
        raise WorkerStartError(str(exc)) from None
    if tls is None:
        return None
    endpoint = metrics_endpoint_tls(tls)
    try:
        make_context(endpoint)
    except (OSError, ssl.SSLError) as exc:
        raise WorkerStartError(f"cannot serve metrics over TLS with {tls.cert} and {tls.key}: {exc}") from None
    return endpoint


def start_metrics(supervisor: Supervisor) -> tuple[MetricsEndpoint, int]:
    """Bind the merged endpoint; returns it (``stop()`` at exit) and its port. OSError: the port is taken;
    WorkerStartError: ``--tls-*`` cannot be used."""
    slots = supervisor.slots

    def targets() -> list[tuple[str, str]]:
        found = ((str(s.index), _port(s.metrics_port_file)) for s in slots if s.open)
        return [(index, f"http://127.0.0.1:{port}/metrics") for index, port in found if port]

    def states() -> dict[str, int]:
        return dict(Counter(s.state for s in slots))

    view = WorkerMetrics(targets, states)
    args = supervisor.args
    tls = endpoint_tls(args)
    endpoint = MetricsEndpoint(view.collect, host=args.metrics_host, port=args.metrics_port, tls=tls)
    return endpoint, endpoint.start()
