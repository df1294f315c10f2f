"""Fixtures every test folder may use: a real Prometheus server (tests/prometheus_support.py), certificates made
at test time (tests/tls_support.py)."""

from tests.prometheus_support import prometheus_binary, promtool_binary, start_prometheus
from tests.tls_support import tls_files

__all__ = ["prometheus_binary", "promtool_binary", "start_prometheus", "tls_files"]
