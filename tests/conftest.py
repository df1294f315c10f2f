"""Fixtures every test folder may use: a real Prometheus server (tests/prometheus_support.py)."""

from tests.prometheus_support import prometheus_binary, promtool_binary, start_prometheus

__all__ = ["prometheus_binary", "promtool_binary", "start_prometheus"]
