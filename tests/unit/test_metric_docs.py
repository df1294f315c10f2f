"""docs/operations.md's metric table and the metrics the server builds are the same list."""

from __future__ import annotations

import re
from pathlib import Path

from server.telemetry.metrics import METRICS

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
#: gauges the OpenTelemetry SDK's observable instruments export (server/telemetry/process.py)
PROCESS = {
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "inferd_gpu_memory_used_bytes",
    "inferd_gpu_memory_total_bytes",
    "inferd_gpu_utilization_ratio",
    "target_info",
}


def documented() -> dict[str, tuple[str, str]]:
    """Metric name → (type, labels cell) of each row of the "Observing inferd" metric table."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text[text.index("## Observing inferd") : text.index("### Traces")]
    rows = re.findall(r"^\| `([a-z_]+)` \| (counter|gauge|histogram) \| ([^|]*) \|", section, re.MULTILINE)
    return {name: (kind, labels) for name, kind, labels in rows}


def test_every_exported_metric_is_documented_with_its_type_and_labels() -> None:
    rows = documented()
    for info in METRICS.values():
        assert info.prometheus in rows, f"{info.prometheus} is missing from docs/operations.md"
        kind, labels = rows[info.prometheus]
        assert kind == info.kind, info.prometheus
        assert re.findall(r"`([a-z_]+)`", labels) == list(info.labels), info.prometheus


def test_the_table_documents_no_metric_the_server_does_not_export() -> None:
    exported = {info.prometheus for info in METRICS.values()} | PROCESS
    assert set(documented()) <= exported
