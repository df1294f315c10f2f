"""The Prometheus test support and the dashboard renderer: the parts that need no running server.

A missing ``prometheus`` must not let CI pass by skipping; Grafana variables must become PromQL that
selects what the variable's "All" would.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests import prometheus_support
from tests.prometheus_support import REQUIRE_ENV, find_binary, write_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_dashboard", REPO_ROOT / "scripts" / "render_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


render = _render_module()


def test_a_missing_prometheus_skips_where_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_support.shutil, "which", lambda name: None)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install prometheus"):
        find_binary("prometheus")


def test_a_missing_prometheus_fails_where_ci_requires_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_support.shutil, "which", lambda name: None)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_ENV):
        find_binary("promtool")


def test_config_scrapes_the_targets_every_interval_with_the_rule_files(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    config = json.loads(write_config(tmp_path / "p.yml", ["127.0.0.1:8002"], rule_files=[rules]).read_text())
    assert config["global"]["scrape_interval"] == "1s" and config["rule_files"] == [str(rules.resolve())]
    assert config["scrape_configs"] == [{"job_name": "inferd", "static_configs": [{"targets": ["127.0.0.1:8002"]}]}]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('rate(x{model=~"$model"}[$__rate_interval])', 'rate(x{model=~"mlp"}[1m])'),
        ('x{model="${model}", version="$version"}', 'x{model=~"mlp", version=~".*"}'),
        ('x{code!="[[code]]"}', 'x{code!~".*"}'),
        ('x{version=~"${version:regex}"}[$__range]', 'x{version=~".*"}[300s]'),
        ('x{code!="OK"}', 'x{code!="OK"}'),
    ],
)
def test_grafana_variables_become_promql(expr: str, expected: str) -> None:
    variables = {"model": "mlp", "__rate_interval": "1m", "__range": "300s"}
    assert render.substitute(expr, variables) == expected


def test_panels_come_in_grid_order_from_inside_rows_without_hidden_targets() -> None:
    dashboard = {
        "panels": [
            {"type": "timeseries", "title": "second", "gridPos": {"x": 12, "y": 1}, "targets": [{"expr": "b"}]},
            {"type": "row", "title": "row", "gridPos": {"y": 0}, "panels": []},
            {"type": "text", "title": "notes", "gridPos": {"x": 0, "y": 0}},
            {
                "type": "row",
                "collapsed": True,
                "gridPos": {"y": 5},
                "panels": [{"type": "stat", "title": "third", "gridPos": {"x": 0, "y": 6}, "targets": [{"expr": "c"}]}],
            },
            {
                "type": "timeseries",
                "title": "first",
                "gridPos": {"x": 0, "y": 1},
                "targets": [{"expr": "a"}, {"expr": "hidden", "hide": True}],
            },
        ]
    }
    panels = render.load_panels(dashboard, {})
    assert [(p.title, [q.expr for q in p.queries]) for p in panels] == [
        ("first", ["a"]),
        ("second", ["b"]),
        ("third", ["c"]),
    ]


def test_cumulative_buckets_become_counts_per_bucket() -> None:
    series = [
        render.Series({"le": "+Inf"}, "", [0, 1], [10.0, 12.0]),
        render.Series({"le": "0.1"}, "", [0, 1], [4.0, 4.0]),
        render.Series({"le": "1"}, "", [0, 1], [9.0, 11.0]),
    ]
    bounds, counts = render._per_bucket(series)
    assert bounds == [0.1, 1.0, float("inf")]
    assert counts == [[4.0, 4.0], [5.0, 7.0], [1.0, 1.0]]
