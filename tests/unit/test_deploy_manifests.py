"""Static checks of deploy/: no cluster or Docker engine is needed (nor available here).

Every YAML document parses; the probes, ports and shutdown timing of the manifests agree with each
other and with the flags inferd takes; the Dockerfiles start the server the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from server.cli.main import build_parser

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extra (make venv)")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))
#: Kubernetes manifests (deploy/prometheus/ and deploy/grafana/ hold other tools' YAML: test_observability_assets.py)
MANIFEST_DIRS = ("k8s", "istio", "kserve")
MANIFESTS = [path for path in YAML_FILES if path.relative_to(DEPLOY).parts[0] in MANIFEST_DIRS]
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def all_documents() -> Iterator[dict[str, Any]]:
    for path in MANIFESTS:
        yield from documents(path)


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in all_documents() if doc["kind"] == kind]
    return found


def flag(args: Sequence[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in a container's args."""
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} is not in the args {list(args)}")


def serve_args(container: dict[str, Any]) -> list[str]:
    """The container's command line after `inferd`, checked to parse as a valid `inferd serve`."""
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:2] == ["inferd", "serve"], argv
    parsed = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert parsed.host == "0.0.0.0"
    return argv[2:]


def container_port(container: dict[str, Any]) -> tuple[str, int]:
    """The serving port: the first one (a `metrics` port may follow it)."""
    port = container["ports"][0]
    return port["name"], int(port["containerPort"])


def service_port(service: dict[str, Any], name: str) -> dict[str, Any]:
    (port,) = [port for port in service["spec"]["ports"] if port["name"] == name]
    return port


def test_deploy_has_the_expected_manifests() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in YAML_FILES}
    assert {
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "istio/destinationrule.yaml",
        "istio/virtualservice.yaml",
        "istio/peerauthentication.yaml",
        "istio/authorizationpolicy.yaml",
        "k8s/security/certificate.yaml",
        "kserve/servingruntime.yaml",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert documents(path), f"{path} holds no document"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_document_names_its_kind(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc


def test_deployment_probes_are_grpc_health_checks_on_the_container_port() -> None:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    _, port = container_port(container)
    assert int(flag(serve_args(container), "--port")) == port
    for probe in PROBES:
        assert container[probe]["grpc"] == {"port": port, "service": ""}, probe


def test_termination_grace_period_exceeds_drain_plus_grace_seconds() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = serve_args(container)
    drain = float(flag(args, "--drain-seconds"))
    grace = float(flag(args, "--grace-seconds"))
    assert drain > 0, "a replica behind a load balancer needs a drain period"
    assert pod["terminationGracePeriodSeconds"] > drain + grace


def test_liveness_does_not_restart_a_pod_while_it_drains() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    liveness = container["livenessProbe"]
    drain = float(flag(serve_args(container), "--drain-seconds"))
    # Draining reports NOT_SERVING; liveness must tolerate that for longer than the drain lasts.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain


def test_service_targets_the_grpc_container_port_with_app_protocol_grpc() -> None:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    name, number = container_port(container)
    service = one("Service")
    assert service["spec"]["selector"] == one("Deployment")["spec"]["selector"]["matchLabels"]
    port = service_port(service, "grpc")
    assert port["targetPort"] in (name, number)
    assert port["appProtocol"] == "grpc"


def test_istio_routes_to_the_service_and_retries_what_a_drain_produces() -> None:
    service = one("Service")
    grpc_port = service_port(service, "grpc")
    rule = one("DestinationRule")
    assert rule["spec"]["host"] == service["metadata"]["name"]
    assert rule["spec"]["trafficPolicy"]["outlierDetection"]
    routes = one("VirtualService")["spec"]["http"]
    assert len(routes) == 2  # streams (no total timeout), then unary; test_deploy_drain_arithmetic.py
    for route in routes:
        assert {"unavailable", "cancelled", "refused-stream", "connect-failure"} <= set(
            route["retries"]["retryOn"].split(",")
        )
        (destination,) = route["route"]
        assert destination["destination"]["host"] == service["metadata"]["name"]
        assert destination["destination"]["port"]["number"] == grpc_port["port"]


def test_kserve_runtime_serves_the_mounted_repository_over_h2c() -> None:
    (container,) = one("ServingRuntime")["spec"]["containers"]
    name, port = container_port(container)
    assert name == "h2c"
    args = serve_args(container)
    assert flag(args, "--repository") == "/mnt/models"
    assert int(flag(args, "--port")) == port
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": ""}
    runtime_formats = {f["name"] for f in one("ServingRuntime")["spec"]["supportedModelFormats"]}
    assert one("InferenceService")["spec"]["predictor"]["model"]["modelFormat"]["name"] in runtime_formats


def test_kserve_runtime_declares_the_open_inference_protocol_and_the_example_uses_grpc_v2() -> None:
    runtime = one("ServingRuntime")["spec"]
    assert runtime["protocolVersions"] == ["v2", "grpc-v2"]
    model = one("InferenceService")["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "grpc-v2"  # inferd has no HTTP endpoint: v2 over gRPC only
    assert model["protocolVersion"] in runtime["protocolVersions"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_serves_on_all_interfaces_at_the_manifest_port(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text(encoding="utf-8")
    cmd_lines = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert len(cmd_lines) == 1, "one exec-form CMD, so inferd is PID 1 and gets SIGTERM"
    argv = json.loads(cmd_lines[0])
    args = serve_args({"command": argv})
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert int(flag(args, "--port")) == container_port(container)[1]
    assert f"EXPOSE {flag(args, '--port')}" in text


# ---------------------------------------------------------------- transport security (docs/security.md)


def _commented_security_args() -> list[str]:
    """The Deployment's commented-out ``# - --tls-...`` / ``--auth-config`` / ``--audit-log`` args."""
    text = (DEPLOY / "k8s" / "deployment.yaml").read_text(encoding="utf-8")
    found = re.findall(r"^\s*# - (--(?:tls-|auth-config|audit-log)\S+)", text, re.MULTILINE)
    return found


def _mounts() -> dict[str, dict[str, Any]]:
    pod = one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: {**m, "volume": volumes[m["name"]]} for m in container["volumeMounts"]}


def test_the_commented_tls_flags_are_valid_and_read_the_mounted_secrets() -> None:
    args = _commented_security_args()
    assert {a.split("=", 1)[0] for a in args} >= {"--tls-cert", "--tls-key", "--tls-client-ca", "--auth-config"}
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    tls_args = [a for a in args if a.startswith("--tls-")]
    # they parse as `inferd serve` flags (the auth config is read while parsing, so it is checked by path only)
    serve_args({**container, "args": [*container["args"], *tls_args]})
    mounts = _mounts()
    tls = mounts["/etc/inferd/tls"]
    assert tls["readOnly"] and "subPath" not in tls, "a subPath mount never sees the kubelet's rotation"
    assert tls["volume"]["secret"]["secretName"] == "inferd-tls"
    assert tls["volume"]["secret"]["optional"], "the pod must start without the Secret while TLS is off"
    files = {flag(tls_args, name) for name in ("--tls-cert", "--tls-key", "--tls-client-ca")}
    assert files == {"/etc/inferd/tls/tls.crt", "/etc/inferd/tls/tls.key", "/etc/inferd/tls/ca.crt"}
    auth = mounts["/etc/inferd/auth"]
    assert auth["volume"]["secret"]["secretName"] == "inferd-auth" and "subPath" not in auth
    assert flag(args, "--auth-config").startswith("/etc/inferd/auth/")
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"], "0440 files need the group"


def test_cert_manager_writes_the_secret_the_deployment_mounts() -> None:
    certificate = one("Certificate")["spec"]
    assert certificate["secretName"] == _mounts()["/etc/inferd/tls"]["volume"]["secret"]["secretName"]
    assert "server auth" in certificate["usages"]
    assert one("Service")["metadata"]["name"] in certificate["dnsNames"]


def test_istio_peer_authentication_is_strict_for_the_deployments_pods_except_the_metrics_port() -> None:
    peer = one("PeerAuthentication")["spec"]
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert peer["selector"]["matchLabels"].items() <= labels.items()
    assert peer["mtls"]["mode"] == "STRICT"
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    metrics = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    assert list(peer.get("portLevelMtls", {})) == metrics


def test_istio_authorization_policy_allows_inference_by_identity_and_probes_to_anyone() -> None:
    policy = one("AuthorizationPolicy")["spec"]
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["selector"]["matchLabels"].items() <= labels.items()
    assert policy["action"] == "ALLOW"
    by_identity = [rule for rule in policy["rules"] if rule.get("from")]
    assert by_identity and all(
        p.startswith("cluster.local/ns/")
        for rule in by_identity
        for f in rule["from"]
        for p in f["source"]["principals"]
    )
    paths = {p for rule in policy["rules"] for t in rule["to"] for p in t["operation"].get("paths", [])}
    assert "/grpc.health.v1.Health/*" in paths and "/inferd.v1.InferenceService/*" in paths
    assert not any(p.startswith("/inferd.v1.ModelService") for p in paths), "model control stays in the pod"
