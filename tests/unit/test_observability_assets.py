"""deploy/prometheus/ and deploy/grafana/: checked with the real tools, as an operator would load them.

`promtool check rules` and `promtool test rules` (synthetic series: each alert fires when it should and
stays quiet otherwise); the rules loaded into a live Prometheus; every PromQL query of the dashboard and
of the prometheus-adapter rules parsed by that Prometheus, with Grafana's variables filled in; and every
metric and label they name is one inferd exports (server/telemetry/metrics.py). Without the Debian
``prometheus`` package the tool-driven tests skip, unless INFERD_REQUIRE_PROMETHEUS=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.telemetry.metrics import METRICS
from server.telemetry.stats import DURATION_BOUNDS_NS
from tests.prometheus_support import PrometheusServer
from tests.support import eventually

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extra (make venv)")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULE_FILES = [DEPLOY / "prometheus" / "alerts.yaml", DEPLOY / "prometheus" / "recording-rules.yaml"]
RULE_TESTS = [DEPLOY / "prometheus" / "alerts.test.yaml", DEPLOY / "prometheus" / "recording-rules.test.yaml"]
DASHBOARD = DEPLOY / "grafana" / "inferd-dashboard.json"
ADAPTER_RULES = DEPLOY / "k8s" / "autoscaling" / "prometheus-adapter-rules.yaml"

#: labels that scraping adds (Prometheus; the Prometheus Operator's monitors; the usual pod scrape jobs)
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
#: process and device gauges (server/telemetry/process.py) and Prometheus' own `up`: name -> labels
OTHER_SERIES = {
    "up": set(),
    "process_resident_memory_bytes": set(),
    "process_cpu_seconds_total": set(),
    "inferd_gpu_memory_used_bytes": {"device"},
    "inferd_gpu_memory_total_bytes": {"device"},
    "inferd_gpu_utilization_ratio": {"device"},
}
#: Grafana's variables, as a query reaches Prometheus (the dashboard's own with "All" selected)
GRAFANA_VARIABLES = {
    "model": ".*",
    "version": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "15000",
}


def exported_series() -> dict[str, set[str]]:
    """Every series name inferd exposes, with its labels (a histogram's _bucket also has `le`)."""
    series = {name: set(labels) for name, labels in OTHER_SERIES.items()}
    for metric in METRICS.values():
        if metric.kind == "histogram":
            series[metric.prometheus + "_bucket"] = {*metric.labels, "le"}
            series[metric.prometheus + "_sum"] = set(metric.labels)
            series[metric.prometheus + "_count"] = set(metric.labels)
        else:
            series[metric.prometheus] = set(metric.labels)
    return series


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows' nested panels included, rows themselves left out."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    return [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels() for t in p.get("targets", [])]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULE_FILES[0])["groups"] for rule in group["rules"]]


def rule_expressions() -> list[tuple[str, str]]:
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def adapter_queries() -> list[tuple[str, str]]:
    """prometheus-adapter's metricsQuery templates, filled in as the adapter does for one pod."""
    (config_map,) = [doc for doc in yaml.safe_load_all(ADAPTER_RULES.read_text()) if doc]
    queries = []
    for rule in yaml.safe_load(config_map["data"]["config.yaml"])["rules"]:
        series = rule["seriesQuery"].split("{")[0].strip()
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="default",pod=~"inferd-.*"')
            .replace("<<.GroupBy>>", "pod")
        )
        queries.append((f"adapter {series}", query))
    return queries


def substitute(expr: str) -> str:
    """The query with Grafana's `$var`, `${var}`, `${var:fmt}` and `[[var]]` filled in; unknown ones fail."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in GRAFANA_VARIABLES, f"unknown template variable ${name} in {expr!r}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def metric_names(expr: str) -> set[str]:
    """The scraped series a query reads (recording rules' outputs, level:metric:operations, left out)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_recorded = re.sub(r"\b\w*:[\w:]+", "", without_strings)
    return set(re.findall(r"\b((?:inferd|process)_\w+|up)\b", without_recorded))


def labels_used(expr: str) -> set[str]:
    """Labels a query matches on or groups by."""
    used = set()
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        used.update(label.strip() for label in grouping.split(",") if label.strip())
    for selector in re.findall(r"\{([^}]*)\}", expr):
        used.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", selector))
    return used


# ---------------------------------------------------------------- promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    from tests.prometheus_support import find_binary

    return find_binary("promtool")


def run_promtool(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_promtool_check_rules_accepts_the_alerting_and_recording_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES), result.stdout


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("what", "old", "new"),
    [
        ("client errors counted as server errors", "OK|INVALID_ARGUMENT|", "OK|"),
        ("a READY version counted as stuck", 'state=~"LOADING|WARMING"', 'state=~"LOADING|WARMING|READY"'),
        ("the latency traffic floor dropped", ">= 0.5\n", ">= 0\n"),
    ],
)
def test_rule_unit_tests_catch_a_broken_alert(promtool: str, tmp_path: Path, what: str, old: str, new: str) -> None:
    """The unit tests would fail on a plausible mistake: they pin behaviour, not just syntax."""
    rules = RULE_FILES[0].read_text(encoding="utf-8")
    assert old in rules, what
    (tmp_path / "alerts.yaml").write_text(rules.replace(old, new), encoding="utf-8")
    shutil.copy(RULE_TESTS[0], tmp_path / RULE_TESTS[0].name)
    result = run_promtool(promtool, "test", "rules", RULE_TESTS[0].name, cwd=tmp_path)
    assert result.returncode != 0, f"{what}: the alert unit tests still pass\n{result.stdout}"


# ---------------------------------------------------------------- the rules' contract


def test_every_alert_waits_has_a_severity_and_tells_what_to_do() -> None:
    for rule in alerting_rules():
        assert re.fullmatch(r"\d+m", rule.get("for", "")), f"{rule['alert']}: a `for:` of minutes"
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        for annotation in ("summary", "description", "runbook"):
            assert rule["annotations"].get(annotation, "").strip(), (rule["alert"], annotation)


def test_every_alert_has_unit_tests_where_it_fires_and_where_it_stays_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS[0])["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def test_the_latency_slo_is_a_bucket_bound_so_the_p99_comparison_is_exact() -> None:
    (rule,) = [rule for rule in alerting_rules() if rule["alert"] == "InferdLatencyP99AboveSLO"]
    slo = re.search(r"\)\s*>\s*([0-9.]+)", rule["expr"])
    assert slo, rule["expr"]
    assert round(float(slo[1]) * 1e9) in DURATION_BOUNDS_NS


def test_runbooks_name_panels_that_exist_in_the_dashboard() -> None:
    titles = {panel["title"] for panel in panels()} | {dashboard()["title"]}
    for rule in alerting_rules():
        for quoted in re.findall(r'"([^"]+)"', rule["annotations"]["runbook"]):
            assert quoted in titles, f"{rule['alert']} names {quoted!r}, which is not a panel"


# ---------------------------------------------------------------- the dashboard


def test_dashboard_is_a_provisionable_grafana_dashboard_with_model_and_version_variables() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("model", "version"):
        variable = variables[name]
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        assert re.fullmatch(rf"label_values\(inferd_requests_total(\{{.*\}})?, {name}\)", query), query
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
    ids = [panel["id"] for panel in board["panels"]] + [p["id"] for r in board["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_declares_a_prometheus_source_and_a_file_provider() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = load_yaml(provisioning / "datasources" / "prometheus.yaml")
    assert sources["apiVersion"] == 1
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]
    providers = load_yaml(provisioning / "dashboards" / "inferd.yaml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_every_panel_queries_the_datasource_variable() -> None:
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_shows_what_an_operator_asks_first() -> None:
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (model, version, le) (rate(inferd_request_duration" in exprs
    for name in (
        "inferd_requests_total",  # throughput, errors by code
        "inferd_queue_depth",
        "inferd_in_flight_requests",
        "inferd_batch_size_bucket",
        "inferd_queue_duration_seconds_bucket",
        "inferd_compute_duration_seconds_bucket",
        "inferd_time_to_first_token_seconds_bucket",
        "inferd_generated_tokens_total",
        "inferd_gpu_memory_used_bytes",
        "inferd_model_version_state",
        "inferd_shadow_argmax_agreement_ratio",
    ):
        assert name in exprs, name
    assert "by (model, version, code)" in exprs


def params(queries: list[tuple[str, str]]) -> list[Any]:
    return [pytest.param(where, expr, id=where) for where, expr in queries]


@pytest.mark.parametrize(("where", "expr"), params(dashboard_queries() + rule_expressions() + adapter_queries()))
def test_queries_name_only_series_and_labels_inferd_exports(where: str, expr: str) -> None:
    series = exported_series()
    names = metric_names(expr)
    assert names or ":" in expr, f"{where}: reads neither an inferd series nor a recorded one: {expr!r}"
    unknown = names - set(series)
    assert not unknown, f"{where}: {sorted(unknown)} are not exported"
    known_labels = set().union(*(series[name] for name in names)) | TARGET_LABELS
    assert labels_used(expr) <= known_labels, f"{where}: labels {labels_used(expr) - known_labels}"


def test_dashboard_queries_follow_the_model_and_version_variables() -> None:
    series = exported_series()
    for where, expr in dashboard_queries():
        for name, selector in re.findall(r"\b(inferd_\w+)(\{[^}]*\})?", expr):
            for label in ("model", "version"):
                if label in series[name]:
                    assert f'{label}=~"${label}"' in selector, f"{where}: {name} ignores ${label}"


# ---------------------------------------------------------------- a live Prometheus


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus with the rules loaded; no targets are needed to parse and evaluate queries."""
    from tests.prometheus_support import find_binary

    binary = find_binary("prometheus")
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), rule_files=RULE_FILES, binary=binary) as server:
        yield server


@pytest.mark.parametrize(("where", "expr"), params(dashboard_queries() + adapter_queries()))
def test_query_parses_as_promql_on_a_live_prometheus(prometheus: PrometheusServer, where: str, expr: str) -> None:
    assert prometheus.parse_error(substitute(expr)) is None, where


def test_the_parse_check_rejects_bad_promql(prometheus: PrometheusServer) -> None:
    assert prometheus.parse_error("sum by (model (rate(inferd_requests_total[1m]))")
    with pytest.raises(AssertionError, match="unknown template variable"):
        substitute('rate(inferd_requests_total{model=~"$modle"}[1m])')


def test_prometheus_loads_every_rule_group_and_evaluates_them_without_error(prometheus: PrometheusServer) -> None:
    expected = {group["name"] for path in RULE_FILES for group in load_yaml(path)["groups"]}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.rules()
        if {g["name"] for g in groups} != expected:
            return None
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule.get("health") != "unknown" for rule in rules) else None

    rules = eventually(evaluated, timeout=30, what="every rule group evaluated once")
    assert [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"] == []
