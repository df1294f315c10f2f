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


def test_istio_routes_to_the_service_and_retries_only_unavailable() -> None:
    service = one("Service")
    grpc_port = service_port(service, "grpc")
    rule = one("DestinationRule")
    assert rule["spec"]["host"] == service["metadata"]["name"]
    assert rule["spec"]["trafficPolicy"]["outlierDetection"]
    (route,) = one("VirtualService")["spec"]["http"]
    assert route["retries"]["retryOn"] == "unavailable"
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
