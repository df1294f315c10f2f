"""The supervisor's one /metrics: every serving worker's endpoint scraped and merged
(server/workers/aggregate_metrics.py) on the user's ``--metrics-host``/``--metrics-port``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from server.workers.aggregate_metrics import MetricsEndpoint, WorkerMetrics

if TYPE_CHECKING:
    from server.workers.supervisor import Supervisor


def _port(path: str | None) -> int:
    text = Path(path).read_text().strip() if path is not None and Path(path).exists() else ""
    return int(text) if text.isdigit() else 0


def start_metrics(supervisor: Supervisor) -> tuple[MetricsEndpoint, int]:
    """Bind the merged endpoint; returns it (``stop()`` at exit) and its port. OSError: the port is taken."""
    slots = supervisor.slots

    def targets() -> list[tuple[str, str]]:
        found = ((str(s.index), _port(s.metrics_port_file)) for s in slots if s.open)
        return [(index, f"http://127.0.0.1:{port}/metrics") for index, port in found if port]

    def states() -> dict[str, int]:
        return dict(Counter(s.state for s in slots))

    view = WorkerMetrics(targets, states)
    args = supervisor.args
    endpoint = MetricsEndpoint(view.collect, host=args.metrics_host, port=args.metrics_port)
    return endpoint, endpoint.start()
