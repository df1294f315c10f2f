"""The Kubernetes manifests under deploy/ against the API's own schemas, offline, and against each other.

kubernetes-validate (its bundled JSON schemas, no cluster) validates every core kind strictly: an unknown
or misspelt field fails. Custom resources (Prometheus Operator, Istio, KServe) have no schema there, so
their required fields are checked here by hand. Then the observability wiring: the metrics port is the
same in the flags, the container, the pod's scrape annotations, the Service, the ServiceMonitor and the
PodMonitor; the HPA scales the Deployment on metrics that inferd exports and prometheus-adapter serves.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.telemetry.metrics import METRICS
from tests.unit.test_deploy_manifests import DEPLOY, MANIFESTS, documents, flag, one, serve_args

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate comes with the dev extra")
yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extra (make venv)")

#: The oldest Kubernetes the manifests claim (native gRPC probes are GA in 1.27; deploy/README.md) and a
#: current one; both schemas ship inside kubernetes-validate (pinned in constraints.txt).
KUBERNETES_VERSIONS = ("1.27.0", "1.33.0")
#: Prometheus Operator durations (monitoring.coreos.com/v1 `Duration`)
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")


def all_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS for doc in documents(path)]


def is_core(doc: dict[str, Any]) -> bool:
    """Kinds of Kubernetes itself: the core group (`v1`), or groups without a dot or under k8s.io."""
    group = doc["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def doc_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.relative_to(DEPLOY)}:{doc['kind']}/{doc['metadata']['name']}"


CORE = [item for item in all_documents() if is_core(item[1])]
CUSTOM = [item for item in all_documents() if not is_core(item[1])]


def the(kind: str, path: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents(DEPLOY / path) if doc["kind"] == kind]
    return found


def pod_template() -> dict[str, Any]:
    return one("Deployment")["spec"]["template"]


def inferd_container() -> dict[str, Any]:
    (container,) = pod_template()["spec"]["containers"]
    return container


def named(ports: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (port,) = [port for port in ports if port.get("name") == name]
    return port


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("item", CORE, ids=doc_id)
def test_core_manifest_is_valid_against_the_kubernetes_schema(item: tuple[Path, dict[str, Any]], version: str) -> None:
    _, doc = item
    kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError with the path of the fault


def test_the_validation_is_strict_so_a_misspelt_field_fails() -> None:
    hpa = the("HorizontalPodAutoscaler", "k8s/autoscaling/hpa.yaml")
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValu"] = hpa["spec"]["metrics"][0]["pods"]["target"].pop(
        "averageValue"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSIONS[0], strict=True)


def test_the_expected_core_kinds_are_validated() -> None:
    kinds = {doc["kind"] for _, doc in CORE}
    assert {"Deployment", "PodDisruptionBudget", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds


def _service_monitor(spec: dict[str, Any]) -> None:
    assert spec["selector"]["matchLabels"]
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels"}
        _endpoint(endpoint)


def _pod_monitor(spec: dict[str, Any]) -> None:
    assert spec["selector"]["matchLabels"]
    assert spec["podMetricsEndpoints"]
    for endpoint in spec["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "portNumber", "path", "scheme", "interval", "scrapeTimeout", "honorLabels"}
        _endpoint(endpoint)


def _endpoint(endpoint: dict[str, Any]) -> None:
    assert isinstance(endpoint["port"], str), "a port *name*: the operator matches it against the port names"
    assert endpoint.get("path", "/metrics").startswith("/")
    assert endpoint.get("scheme", "http") in ("http", "https")
    for key in ("interval", "scrapeTimeout"):
        assert DURATION.match(endpoint.get(key, "0")), f"{key}: {endpoint.get(key)}"


def _destination_rule(spec: dict[str, Any]) -> None:
    assert isinstance(spec["host"], str) and spec["trafficPolicy"]


def _virtual_service(spec: dict[str, Any]) -> None:
    assert spec["hosts"] and spec["http"]
    for route in spec["http"]:
        assert all(r["destination"]["host"] for r in route["route"])


def _peer_authentication(spec: dict[str, Any]) -> None:
    assert spec["selector"]["matchLabels"], "without a selector it would apply to the whole namespace"
    modes = {"UNSET", "DISABLE", "PERMISSIVE", "STRICT"}
    assert spec["mtls"]["mode"] in modes
    for port, setting in spec.get("portLevelMtls", {}).items():
        assert isinstance(port, int) and setting["mode"] in modes


def _authorization_policy(spec: dict[str, Any]) -> None:
    assert spec["selector"]["matchLabels"]
    assert spec.get("action", "ALLOW") in {"ALLOW", "DENY", "AUDIT", "CUSTOM"}
    for rule in spec["rules"]:
        assert set(rule) <= {"from", "to", "when"}
        for source in rule.get("from", []):
            assert set(source) == {"source"}
            assert set(source["source"]) <= {"principals", "notPrincipals", "namespaces", "requestPrincipals"}
        for target in rule.get("to", []):
            assert set(target) == {"operation"}
            assert set(target["operation"]) <= {"ports", "paths", "methods", "hosts", "notPaths"}
            assert all(isinstance(port, str) for port in target["operation"].get("ports", []))


def _certificate(spec: dict[str, Any]) -> None:
    assert spec["secretName"] and spec["issuerRef"]["name"]
    assert spec.get("dnsNames") or spec.get("ipAddresses") or spec.get("uris")
    assert spec["issuerRef"].get("kind", "Issuer") in {"Issuer", "ClusterIssuer"}


#: the values KServe's protocolVersion(s) fields take
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}


def _serving_runtime(spec: dict[str, Any]) -> None:
    assert spec["supportedModelFormats"] and spec["containers"]
    assert all(c["name"] and c["image"] for c in spec["containers"])
    assert set(spec.get("protocolVersions", ["v1"])) <= KSERVE_PROTOCOLS


def _inference_service(spec: dict[str, Any]) -> None:
    model = spec["predictor"]["model"]
    assert model["modelFormat"]["name"] and model["storageUri"]
    assert model.get("protocolVersion", "v1") in KSERVE_PROTOCOLS


#: (apiVersion, kind) -> the fields its CRD requires (or these manifests rely on), checked by hand
CUSTOM_CHECKS: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _service_monitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): _pod_monitor,
    ("networking.istio.io/v1", "DestinationRule"): _destination_rule,
    ("networking.istio.io/v1", "VirtualService"): _virtual_service,
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): _serving_runtime,
    ("serving.kserve.io/v1beta1", "InferenceService"): _inference_service,
    ("security.istio.io/v1", "PeerAuthentication"): _peer_authentication,
    ("security.istio.io/v1", "AuthorizationPolicy"): _authorization_policy,
    ("cert-manager.io/v1", "Certificate"): _certificate,
}


@pytest.mark.parametrize("item", CUSTOM, ids=doc_id)
def test_custom_resource_has_its_required_fields(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    # kubernetes-validate has no schema for CRDs: that is why these are checked by hand
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    check = CUSTOM_CHECKS.get((doc["apiVersion"], doc["kind"]))
    assert check is not None, f"no structural check for {doc['apiVersion']} {doc['kind']}: add one"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    check(doc["spec"])


# ---------------------------------------------------------------- the metrics port, end to end


def metrics_port() -> int:
    """The port `inferd serve` is told to serve /metrics on, checked to be bound on every interface."""
    args = serve_args(inferd_container())
    assert flag(args, "--metrics-host") == "0.0.0.0", "a scraper outside the pod cannot reach 127.0.0.1"
    return int(flag(args, "--metrics-port"))


def test_metrics_port_is_a_named_container_port_and_the_pod_scrape_annotations_agree() -> None:
    port = metrics_port()
    assert named(inferd_container()["ports"], "metrics")["containerPort"] == port
    annotations = pod_template()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_metrics_admin_and_serving_ports_do_not_collide() -> None:
    args = serve_args(inferd_container())
    ports = [int(flag(args, name)) for name in ("--port", "--admin-port", "--metrics-port")]
    assert len(set(ports)) == 3, ports


def test_service_monitor_scrapes_the_service_port_that_leads_to_the_metrics_container_port() -> None:
    monitor = the("ServiceMonitor", "k8s/monitoring/servicemonitor.yaml")
    service = one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    service_port = named(service["spec"]["ports"], endpoint["port"])
    assert service_port["targetPort"] == "metrics"
    assert named(inferd_container()["ports"], service_port["targetPort"])["containerPort"] == metrics_port()
    assert endpoint["path"] == "/metrics"


def test_pod_monitor_scrapes_the_metrics_container_port_of_the_deployments_pods() -> None:
    monitor = the("PodMonitor", "k8s/monitoring/podmonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_template()["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert named(inferd_container()["ports"], endpoint["port"])["containerPort"] == metrics_port()
    assert endpoint["path"] == "/metrics"


# ---------------------------------------------------------------- autoscaling


def adapter_rules() -> list[dict[str, Any]]:
    config = the("ConfigMap", "k8s/autoscaling/prometheus-adapter-rules.yaml")["data"]["config.yaml"]
    rules: list[dict[str, Any]] = yaml.safe_load(config)["rules"]
    return rules


def adapter_metric_names() -> dict[str, dict[str, Any]]:
    """The custom metric names the adapter serves, each with its rule (name.matches applied to the series)."""
    served = {}
    for rule in adapter_rules():
        series = re.match(r"\s*(\w+)\{", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        name = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${", "\\g<").replace("}", ">"), series[1])
        served[name] = rule
    return served


def test_hpa_scales_the_deployment_within_the_disruption_budget() -> None:
    hpa = the("HorizontalPodAutoscaler", "k8s/autoscaling/hpa.yaml")
    deployment = one("Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] > one("PodDisruptionBudget")["spec"]["minAvailable"]
    assert hpa["spec"]["minReplicas"] >= deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_hpa_pods_metrics_are_inferd_gauges_that_the_adapter_serves_per_pod() -> None:
    hpa = the("HorizontalPodAutoscaler", "k8s/autoscaling/hpa.yaml")
    served = adapter_metric_names()
    gauges = {m.prometheus for m in METRICS.values() if m.kind == "gauge"}
    names = []
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "Pods"
        name = metric["pods"]["metric"]["name"]
        names.append(name)
        assert name in gauges, f"{name} is not a gauge inferd exports"
        assert name in served, f"no prometheus-adapter rule serves {name}"
        assert float(metric["pods"]["target"]["averageValue"]) > 0
        overrides = served[name]["resources"]["overrides"]
        assert overrides["namespace"]["resource"] == "namespace" and overrides["pod"]["resource"] == "pod"
    assert {"inferd_in_flight_requests", "inferd_queue_depth"} <= set(names)


def test_adapter_rules_query_their_own_series_with_the_adapters_template_fields() -> None:
    for rule in adapter_rules():
        query = rule["metricsQuery"]
        for field in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert field in query, (field, query)
        assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
