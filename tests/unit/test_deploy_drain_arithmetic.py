"""Shutdown timing and the sidecar configs under deploy/, checked from the files themselves.

The arithmetic (docs/operations.md, "Shutdown timing"): on SIGTERM inferd needs up to
``drain + REFUSE_MAX_S + grace`` seconds (drain window, at most 1 s of refusals before the port closes, the
grace of in-flight calls). Whatever proxies to it must keep proxying at least that long (Istio's
terminationDrainDuration, Envoy's --drain-time-s, nginx's preStop sleep), and whatever kills the process
(the kubelet's terminationGracePeriodSeconds, docker's --stop-timeout) must wait at least for both.

Envoy is not installed here or in CI (no Debian package), so deploy/envoy/envoy.yaml is checked
structurally; nginx is, so deploy/nginx/nginx.conf also goes through ``nginx -t`` when present.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.app import REFUSE_MAX_S
from server.cli.main import build_parser
from tests.unit.test_deploy_manifests import DEPLOY, documents, flag, one, serve_args

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev extra (make venv)")

#: Istio's default retryOn (what a VirtualService's retryOn replaces): every one is what a rollout produces
ISTIO_DEFAULT_RETRY_ON = {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
STREAM_PATHS = {"/inferd.v1.InferenceService/PredictStream", "/inference.GRPCInferenceService/ModelStreamInfer"}
NGINX = DEPLOY / "nginx" / "nginx.conf"
ENVOY = DEPLOY / "envoy" / "envoy.yaml"


def seconds(text: str | int | float) -> float:
    """A duration as Istio/Envoy/nginx write it: 25s, 1m, 300, 0s, 500ms."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(text).strip())
    assert match, f"not a duration: {text!r}"
    value, unit = float(match[1]), match[2] or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def inferd_shutdown_seconds(args: list[str]) -> float:
    """The longest graceful shutdown of `inferd serve ARGS`: drain + the refusal bound + grace."""
    parsed = build_parser().parse_args(["serve", *args])
    return float(parsed.drain_seconds) + REFUSE_MAX_S + float(parsed.grace_seconds)


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


def deployment_args() -> list[str]:
    (container,) = pod_spec()["containers"]
    return serve_args(container)


def istio_sidecar_drain_seconds() -> float:
    annotation = one("Deployment")["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]
    config = yaml.safe_load(annotation)  # the annotation's value is itself YAML (Istio's ProxyConfig)
    return seconds(config["terminationDrainDuration"])


# ---------------------------------------------------------------- Kubernetes and Istio


def test_istio_sidecar_outlives_inferds_drain_and_grace() -> None:
    need = inferd_shutdown_seconds(deployment_args())
    assert need == 21  # 10 + 1 + 10: the numbers docs/operations.md explains
    assert istio_sidecar_drain_seconds() >= need, "the sidecar would stop proxying before inferd finished"


def test_termination_grace_covers_the_sidecar_drain_and_inferd() -> None:
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= istio_sidecar_drain_seconds()
    assert grace >= inferd_shutdown_seconds(deployment_args())


def test_kserve_runtime_drains_and_keeps_model_control_off_the_public_port() -> None:
    (container,) = one("ServingRuntime")["spec"]["containers"]
    args = serve_args(container)
    assert int(flag(args, "--admin-port")) != int(flag(args, "--port"))
    assert float(flag(args, "--drain-seconds")) > 0


def virtual_service_routes() -> dict[str, dict[str, Any]]:
    return {route["name"]: route for route in one("VirtualService")["spec"]["http"]}


def test_istio_streams_have_their_own_route_without_a_total_timeout() -> None:
    routes = virtual_service_routes()
    streams, unary = routes["inferd-streams"], routes["inferd-unary"]
    assert {m["uri"]["exact"] for m in streams["match"]} == STREAM_PATHS
    assert seconds(streams["timeout"]) == 0, "a route timeout caps the whole streamed response"
    assert "perTryTimeout" not in streams["retries"], "a per-try timeout would cap the stream too"
    assert 0 < seconds(unary["timeout"]) <= 60
    assert 0 < seconds(unary["retries"]["perTryTimeout"]) <= seconds(unary["timeout"])
    # the stream route comes first: Istio takes the first route that matches
    assert list(routes) == ["inferd-streams", "inferd-unary"]


def test_istio_retry_on_keeps_istios_default_conditions() -> None:
    for route in one("VirtualService")["spec"]["http"]:
        assert set(route["retries"]["retryOn"].split(",")) >= ISTIO_DEFAULT_RETRY_ON, route["name"]


def test_destination_rule_has_a_connection_pool_and_a_circuit_breaker() -> None:
    policy = one("DestinationRule")["spec"]["trafficPolicy"]
    http = policy["connectionPool"]["http"]
    assert http["http2MaxRequests"] > 0
    assert http["maxRequestsPerConnection"] == 0, "gRPC connections are long-lived"
    assert policy["connectionPool"]["tcp"]["maxConnections"] > 0
    outlier = policy["outlierDetection"]
    assert outlier["consecutiveGatewayErrors"] > 0
    assert 0 < outlier["maxEjectionPercent"] < 100, "never eject every replica"


# ---------------------------------------------------------------- Docker


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_docker_stop_timeout_covers_the_images_drain_and_grace(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text(encoding="utf-8")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    need = inferd_shutdown_seconds(json.loads(cmd)[2:])
    assert need > 10, "docker's default stop timeout (10 s) is enough: drop the label"
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    (label,) = re.findall(r'^LABEL dev\.inferd\.stop-timeout-seconds="(\d+)"$', text, re.MULTILINE)
    assert int(label) >= need
    # every `docker run` the file shows passes that timeout (a Dockerfile cannot set it)
    runs = re.findall(r"^#\s+docker run .*$", text, re.MULTILINE)
    assert runs and all(f"--stop-timeout {label}" in run for run in runs), runs


# ---------------------------------------------------------------- Envoy (structural: envoy is not installed)


def envoy() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ENVOY.read_text(encoding="utf-8"))
    return config


def envoy_connection_manager() -> dict[str, Any]:
    (listener,) = envoy()["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    assert manager["name"] == "envoy.filters.network.http_connection_manager"
    config: dict[str, Any] = manager["typed_config"]
    return config


def envoy_cluster() -> dict[str, Any]:
    (cluster,) = envoy()["static_resources"]["clusters"]
    return cluster


def test_envoy_config_has_the_expected_shape() -> None:
    config = envoy()
    assert set(config) == {"admin", "static_resources"}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    manager = envoy_connection_manager()
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router"
    for key in ("@type", "stat_prefix", "codec_type", "route_config", "drain_timeout"):
        assert key in manager, key
    for typed in (manager, *(f["typed_config"] for f in manager["http_filters"])):
        assert typed["@type"].startswith("type.googleapis.com/envoy."), typed["@type"]
    assert "<<" not in ENVOY.read_text(encoding="utf-8"), "Envoy's YAML loader has no merge keys"


def test_envoy_proxies_to_inferds_port_over_http2_with_grpc_health_checks() -> None:
    cluster = envoy_cluster()
    (endpoints,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = endpoints["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == int(flag(deployment_args(), "--port"))
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    http2 = options["explicit_http_config"]["http2_protocol_options"]
    keepalive_min = build_parser().parse_args(["serve", "-r", "x"]).keepalive_min_ping_interval_seconds
    assert seconds(http2["connection_keepalive"]["interval"]) >= keepalive_min, "inferd would count ping strikes"
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"]["service_name"] == ""
    assert check["unhealthy_threshold"] == 1, "one NOT_SERVING means the drain has begun"
    assert seconds(check["interval"]) < float(flag(deployment_args(), "--drain-seconds"))
    assert cluster["outlier_detection"] and cluster["circuit_breakers"]["thresholds"]


def test_envoy_routes_streams_without_a_timeout_and_retries_istios_default_conditions() -> None:
    (host,) = envoy_connection_manager()["route_config"]["virtual_hosts"]
    stream_routes = [r for r in host["routes"] if r["match"].get("path") in STREAM_PATHS]
    assert {r["match"]["path"] for r in stream_routes} == STREAM_PATHS
    for route in host["routes"]:
        policy = route["route"]["retry_policy"]
        assert set(policy["retry_on"].split(",")) >= ISTIO_DEFAULT_RETRY_ON
        if route in stream_routes:
            assert seconds(route["route"]["timeout"]) == 0 and "per_try_timeout" not in policy
        else:
            assert seconds(route["route"]["timeout"]) > 0
    assert host["routes"][-1]["match"]["prefix"] == "/", "the catch-all unary route comes last"


def test_envoy_drains_at_least_as_long_as_inferd() -> None:
    need = inferd_shutdown_seconds(deployment_args())
    assert seconds(envoy_connection_manager()["drain_timeout"]) >= need
    documented = re.findall(r"--drain-time-s (\d+)", ENVOY.read_text(encoding="utf-8"))
    assert documented and all(int(value) >= need for value in documented)
    assert pod_spec()["terminationGracePeriodSeconds"] >= max(int(v) for v in documented)


# ---------------------------------------------------------------- nginx


def nginx_directives() -> dict[str, list[str]]:
    """Every `name args;` line of deploy/nginx/nginx.conf (comments dropped), by directive name."""
    found: dict[str, list[str]] = {}
    for line in NGINX.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.endswith(";"):
            name, _, args = line[:-1].partition(" ")
            found.setdefault(name, []).append(args.strip())
    return found


def nginx_size_mb(text: str) -> float:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", text)
    assert match, text
    return int(match[1]) * {"": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[match[2].lower()]


def test_nginx_config_is_set_for_grpc() -> None:
    found = nginx_directives()
    assert found["grpc_pass"] == ["grpc://inferd"]
    (listen,) = found["listen"]
    assert "http2" in listen.split()
    (body,) = found["client_max_body_size"]
    assert nginx_size_mb(body) >= int(flag(deployment_args(), "--max-receive-message-mb"))
    # client side and upstream side: both far above nginx's default 1000 calls per connection
    assert len(found["keepalive_requests"]) == 2 and all(int(v) >= 10_000 for v in found["keepalive_requests"])
    assert int(found["keepalive"][0]) > 0, "upstream connections are kept open"
    for timeout in ("grpc_read_timeout", "grpc_send_timeout"):
        (value,) = found[timeout]
        assert seconds(value) >= 600, f"{timeout} would cut a long stream's silences"
    (upstream,) = found["server"]
    assert upstream.split()[0] == f"127.0.0.1:{flag(deployment_args(), '--port')}"


def render_nginx(tmp_path: Path, listen: int, upstream: int) -> Path:
    """deploy/nginx/nginx.conf with these ports and its pid, logs and temp folders under tmp_path.

    tests/e2e/test_nginx_rollout.py runs exactly this rendering; nothing else in the file changes.
    """
    text = NGINX.read_text(encoding="utf-8")
    text, listens = re.subn(r"listen 8080 http2;", f"listen 127.0.0.1:{listen} http2;", text)
    text, servers = re.subn(r"server 127\.0\.0\.1:8001 ", f"server 127.0.0.1:{upstream} ", text)
    text, temps = re.subn(r"/tmp/nginx", str(tmp_path / "nginx"), text)
    text, logs = re.subn(r"error_log stderr notice;", f"error_log {tmp_path / 'nginx-error.log'} info;", text)
    assert (listens, servers, logs) == (1, 1, 1) and temps == 6, "deploy/nginx/nginx.conf changed shape"
    path = tmp_path / "nginx.conf"
    path.write_text(text, encoding="utf-8")
    return path


def test_nginx_accepts_the_config() -> None:
    nginx = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (Debian package nginx)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = render_nginx(Path(tmp), 18080, 18001)
        result = subprocess.run(
            [nginx, "-t", "-p", tmp, "-c", str(config), "-e", str(Path(tmp) / "startup-error.log")],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_every_sidecar_file_is_where_the_docs_say() -> None:
    docs = (DEPLOY.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    for path in (NGINX, ENVOY, DEPLOY / "istio" / "virtualservice.yaml"):
        assert str(path.relative_to(DEPLOY.parent)) in docs, path
    assert documents(DEPLOY / "istio" / "destinationrule.yaml")
