"""The composition root: builds the registry, servicers, health and the gRPC server, and runs them.

Nothing else constructs long-lived objects; every background task starts in ``start`` and is awaited
in ``stop``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_reflection.v1alpha import reflection

from engines.base import available_backends
from inferd.v1 import admin_pb2_grpc
from server import __version__
from server.api.handler_wrapping import wrapped_server
from server.api.health import Health
from server.api.inference import SERVICE_NAME, InferenceServicer, MessageLimits, ServerInfo
from server.api.inputs import DEFAULT_MAX_REQUEST_ELEMENTS
from server.api.interceptors import ErrorStatusInterceptor, WrappingInterceptor
from server.api.live_calls import LiveCalls, stop_server
from server.api.model_service import SERVICE_NAME as ADMIN_SERVICE_NAME
from server.api.model_service import ModelServicer
from server.api.oip.service import SERVICE_NAME as OIP_SERVICE_NAME
from server.api.oip.service import OipServicer
from server.api.transport import TransportLimits
from server.models.gpu import DEFAULT_FRACTION as DEFAULT_GPU_MEMORY_FRACTION
from server.models.manager import ModelManager
from server.models.registry import Registry
from server.models.repository import Repository
from server.models.shadow import ShadowMirror
from server.models.slot import DEFAULT_DRAIN_TIMEOUT_S, Slot
from server.security.access import AccessControl, AuthStartupError
from server.security.audit import AuditLog, AuditLogOptions
from server.security.auth_config import AuthConfig
from server.security.tls import ServerSecurity, ServerTls, TlsConfigError
from server.telemetry.metrics import MetricsSource
from server.telemetry.options import EndpointTls, TelemetryOptions
from server.telemetry.setup import MetricsEndpointError, Telemetry

if TYPE_CHECKING:
    from server.workers.worker_mode import WorkerControl, WorkerRole

log = logging.getLogger("inferd")
_MiB = 1024 * 1024
#: on shutdown the port closes once no call was refused for this long (clients went elsewhere) ...
REFUSE_QUIET_S = 0.1
#: ... or after this long, if some client keeps sending here regardless
REFUSE_MAX_S = 1.0


class StartupError(Exception):
    """The server cannot start (e.g. its port is taken)."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    repository: Path
    host: str = "127.0.0.1"
    port: int = 8001
    max_receive_message_mb: int = 64
    max_send_message_mb: int = 64
    #: Elements a Predict(Stream) request's inputs may hold, checked before any is decoded.
    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS
    #: Let several processes share the port (SO_REUSEPORT). Off: a busy port fails loudly.
    reuse_port: bool = False
    #: Seconds between NOT_SERVING and closing the port on shutdown (lets the mesh move traffic).
    drain_seconds: float = 0.0
    #: Seconds in-flight RPCs get to finish once the port is closing.
    grace_seconds: float = 10.0
    #: Seconds an unloaded or replaced version waits for its in-flight requests and open streams before
    #: they are ended with UNAVAILABLE.
    unload_drain_seconds: float = DEFAULT_DRAIN_TIMEOUT_S
    device: str = "cpu"
    #: Serve inferd.v1.ModelService on this port, bound to 127.0.0.1, instead of the main port (0 = any).
    admin_port: int | None = None
    #: Seconds between repository scans for new, removed or changed models; None = no polling.
    poll_interval: float | None = None
    #: Build TensorRT plans from model.onnx (and rebuild foreign plans) into the plan cache.
    trt_auto_build: bool = False
    #: Where auto-built plans are kept; None = $INFERD_TRT_CACHE or ~/.cache/inferd/trt.
    trt_cache_dir: Path | None = None
    #: Share of each GPU's memory that model loads may fill; None = 0.9 (or the model's own parameter).
    gpu_memory_fraction: float | None = None
    #: Engines models may be served by (--allowed-engines); None = every engine. A model whose engine is
    #: not listed ends FAILED, so e.g. ("onnxruntime", "torch", "tensorrt") refuses model.py models.
    allowed_engines: tuple[str, ...] | None = None
    #: HTTP/2 limits: streams per connection, keepalive enforcement, connection idle and age (transport.py)
    transport: TransportLimits = field(default_factory=TransportLimits)
    #: metrics endpoint, OTLP push, tracing, access log (server/telemetry/; off by default here, the
    #: ``inferd serve`` command serves metrics on 8002 unless told otherwise)
    telemetry: TelemetryOptions = field(default_factory=TelemetryOptions)
    #: TLS / mTLS on every gRPC port (server/security/tls.py); None = plaintext
    tls: ServerTls | None = None
    #: one JSON line per model-control action and per denied call (server/security/audit.py); None = none
    audit_log: AuditLogOptions | None = None
    #: authentication, authorization and rate limits (--auth-config, server/security/); None = every call is
    #: allowed and no security interceptor is installed (zero cost)
    auth: AuthConfig | None = None
    #: run as worker i of ``inferd serve --workers N`` (server/workers/); None = a server on its own
    worker: WorkerRole | None = None

    def engine_defaults(self) -> dict[str, str]:
        """Server-wide engine parameters; a model's config.pbtxt parameters override them."""
        defaults: dict[str, str] = {}
        if self.trt_auto_build:
            defaults["trt_auto_build"] = "true"
        if self.trt_cache_dir is not None:
            defaults["trt_cache_dir"] = str(self.trt_cache_dir)
        if self.gpu_memory_fraction is not None:
            defaults["gpu_memory_fraction"] = str(self.gpu_memory_fraction)
        return defaults


def grpc_options(options: ServerOptions) -> list[tuple[str, int]]:
    """gRPC's message limits sit above ours so oversize messages reach our handler and get a clear message;
    then the HTTP/2 connection limits (:class:`~server.api.transport.TransportLimits`)."""
    receive = options.max_receive_message_mb * _MiB
    send = options.max_send_message_mb * _MiB
    return [
        ("grpc.max_receive_message_length", receive * 2 + _MiB),
        ("grpc.max_send_message_length", send + _MiB),
        ("grpc.so_reuseport", 1 if options.reuse_port else 0),
        *options.transport.grpc_options(),
    ]


def telemetry_options(options: ServerOptions) -> TelemetryOptions:
    """With ``--tls-*``, the metrics endpoint serves HTTPS with the same certificate (and asks scrapers for a
    client certificate when the gRPC ports require one): no port of the server stays plaintext."""
    tls = options.tls
    if tls is None or options.telemetry.metrics_tls is not None:
        return options.telemetry
    if options.worker is not None:  # plain HTTP on 127.0.0.1: only its supervisor scrapes it, and serves TLS
        return options.telemetry
    return replace(options.telemetry, metrics_tls=metrics_endpoint_tls(tls))


def metrics_endpoint_tls(tls: ServerTls) -> EndpointTls:
    """The metrics endpoint's HTTPS for the gRPC ports' ``--tls-*`` (the supervisor's merged one too)."""
    client_ca = tls.client_ca if tls.client_auth == "require" else None
    return EndpointTls(tls.cert, tls.key, client_ca)


class InferdServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.repository = Repository(options.repository)
        self.health = Health((SERVICE_NAME,))
        self.registry = Registry(on_health_change=self.health.set_model)
        self.manager = ModelManager(
            self.repository,
            self.registry,
            device=options.device,
            engine_defaults=options.engine_defaults(),
            drain_timeout_s=options.unload_drain_seconds,
            allowed_engines=options.allowed_engines,
        )
        self.shadow = ShadowMirror()
        self.limits = MessageLimits(
            max_receive_bytes=options.max_receive_message_mb * _MiB,
            max_send_bytes=options.max_send_message_mb * _MiB,
            max_request_elements=options.max_request_elements,
        )
        self.info = ServerInfo(
            name="inferd",
            version=__version__,
            engines=tuple(
                e for e in available_backends() if options.allowed_engines is None or e in options.allowed_engines
            ),
            extensions=("health", "reflection", "streaming", "chunked-outputs", "model-control", "statistics"),
            started=time.monotonic(),
            gpu_memory_fraction=options.gpu_memory_fraction or DEFAULT_GPU_MEMORY_FRACTION,
        )
        self.telemetry = Telemetry(telemetry_options(options), __version__)
        self.servicer = InferenceServicer(
            self.registry,
            self.limits,
            self.info,
            self.shadow,
            max_predict_streams_per_connection=options.transport.max_predict_streams_per_connection,
            observers=self.telemetry.observers,
        )
        self.admin = ModelServicer(self.manager)
        #: the Open Inference Protocol v2 over the same registry, batchers and statistics (server/api/oip/)
        self.oip = OipServicer(self.servicer, self.manager, self.health, self.info)
        #: the main port's open calls: at shutdown, calls that can never finish do not hold the grace period
        self.calls = LiveCalls()
        self._server: grpc.aio.Server | None = None
        self._admin_server: grpc.aio.Server | None = None
        self.port = 0
        self.admin_port = 0
        self._poller: asyncio.Task[None] | None = None
        #: the ports' credentials (TLS files checked and reloaded), made in ``start``
        self._security: ServerSecurity | None = None
        #: the audit log's writer (its thread starts here, like the access log's); closed last in ``stop``
        self.audit = AuditLog(options.audit_log) if options.audit_log is not None else None
        self.access = AccessControl(options.auth, self.audit) if options.auth is not None else None
        #: the worker's private control server and forwarding, under ``inferd serve --workers N``
        self.worker: WorkerControl | None = None
        if options.worker is not None:
            from server.workers.worker_mode import WorkerControl

            self.worker = WorkerControl(self, options.worker)

    def _build_grpc_server(self, *, inference: bool, admin: bool) -> grpc.aio.Server:
        calls = self.calls if inference else LiveCalls()  # outermost: it counts every call, health's too
        interceptors: list[WrappingInterceptor] = [calls, ErrorStatusInterceptor()]
        if self.access is not None:  # outside the error mapping: its aborts are final
            interceptors.insert(1, self.access.interceptor())
        # applied once per method at registration, not per call (server/api/handler_wrapping.py)
        server = wrapped_server(interceptors, options=grpc_options(self.options))
        services = [reflection.SERVICE_NAME, "grpc.health.v1.Health"]
        if self.worker is not None and inference:  # first: control and statistics answer for every worker
            server.add_generic_rpc_handlers(self.worker.front_handlers(admin))
        if inference:
            server.add_generic_rpc_handlers((self.servicer.handler(), self.oip.handler(control=admin)))
            services += [SERVICE_NAME, OIP_SERVICE_NAME]
        if admin:
            if self.worker is None:  # a worker forwards ModelService (front_handlers) instead
                admin_pb2_grpc.add_ModelServiceServicer_to_server(self.admin, server)
            services.append(ADMIN_SERVICE_NAME)
            if not inference:  # OIP's repository RPCs are model control: served where ModelService is
                server.add_generic_rpc_handlers((self.oip.control_handler(),))
                services.append(OIP_SERVICE_NAME)
        self.health.add_to(server)
        reflection.enable_server_reflection(services, server)
        return server

    @property
    def metrics_port(self) -> int:
        """The bound Prometheus endpoint's port; 0 when there is none."""
        return self.telemetry.metrics_port

    def _versions(self) -> list[Slot]:
        """Every version the registry holds, for the metrics exporter."""
        return [slot for entry in self.registry.models() for slot in entry.slots.values()]

    def _bind(self, server: grpc.aio.Server, address: str) -> int:
        credentials = self._security.credentials() if self._security is not None else None
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {address}: {exc} (is another server using the port?)") from None
        if port == 0:
            raise StartupError(f"cannot listen on {address} (is another server using the port?)")
        return port

    async def start(self) -> int:
        """Bind, start answering (health NOT_SERVING), load the repository, then report SERVING."""
        if self.access is not None:
            try:
                self.access.check_tls(self.options.tls)
            except AuthStartupError as exc:
                raise StartupError(str(exc)) from None
        try:
            self._security = ServerSecurity(self.options.tls)
        except TlsConfigError as exc:
            raise StartupError(str(exc)) from None
        log.info("transport security: %s", self._security.describe())
        separate_admin = self.options.admin_port is not None
        control_here = not separate_admin and not (self.worker is not None and self.worker.role.control_elsewhere)
        server = self._build_grpc_server(inference=True, admin=control_here)
        address = f"{self.options.host}:{self.options.port}"
        if self.worker is None:  # a worker binds once its supervisor says go (after the replay)
            self.port = self._bind(server, address)
        self._server = server
        if separate_admin:
            admin = self._build_grpc_server(inference=False, admin=True)
            self.admin_port = self._bind(admin, f"127.0.0.1:{self.options.admin_port}")
            self._admin_server = admin
        else:
            self.admin_port = self.port
        try:
            dropped = self.telemetry.access_log_dropped if self.options.telemetry.access_log is not None else None
            source = MetricsSource(
                self._versions,
                self.servicer.unrouted,
                self.manager.load_failures,
                dropped,
                feedback_unmatched=self.servicer.feedback.unmatched,
            )
            self.telemetry.start(source)
        except MetricsEndpointError as exc:
            raise StartupError(str(exc)) from None
        await self.health.set_server(False)
        if self.access is not None:
            await self.access.start()
            log.info("%s", self.access.describe())
        if self.worker is None:
            await server.start()
        else:
            await self.worker.start_control()
        if self._admin_server is not None:
            await self._admin_server.start()
        await self.manager.load_all()
        # the start-up heap (modules, engines, configs: tens of thousands of objects) lives as long as the
        # server: moved out of the collector's reach, full collections under load stop re-scanning it
        # (measured +11 % Predict throughput at concurrency 32; docs/performance.md)
        gc.freeze()
        if self.options.poll_interval:
            self._poller = asyncio.get_running_loop().create_task(self.manager.poll_forever(self.options.poll_interval))
        if self.worker is not None:
            self.port = await self.worker.open(lambda: self._bind(server, address), server)
        await self.health.set_server(True)
        if self.worker is not None:
            self.worker.serving(self.port)
        log.info("inferd %s serving on %s:%d", __version__, self.options.host, self.port)
        if separate_admin:
            log.info("model control (inferd.v1.ModelService) on 127.0.0.1:%d", self.admin_port)
        return self.port

    async def stop(self, *, drain: bool = True) -> None:
        """Graceful shutdown, one INFO line per step (docs/operations.md):

        1. health NOT_SERVING (open health Watch streams get it and end); 2. the drain window
        (``drain_seconds``: traffic still served while load balancers move away); 3. new inference calls
        refused with UNAVAILABLE while the port stays open, until they stop arriving
        (:mod:`server.api.shutdown_gate`); 4. the port closes and in-flight calls get ``grace_seconds`` to
        finish, except calls that can never finish (a health Watch whose client reads nothing,
        :mod:`server.api.live_calls`); 5. the models close.

        ``drain=False`` skips the drain window (a stop during start-up, before anything was SERVING).
        """
        if self._server is None:
            return
        options = self.options
        await self.health.shutdown()
        log.info("shutdown: health is NOT_SERVING")
        if drain and options.drain_seconds > 0:
            log.info("shutdown: drain window of %gs started (requests are still served)", options.drain_seconds)
            await asyncio.sleep(options.drain_seconds)
            log.info("shutdown: drain window ended")
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        gate = self.servicer.gate
        gate.close()
        log.info("shutdown: refusing new calls with UNAVAILABLE")
        if not await gate.wait_quiet(REFUSE_QUIET_S, REFUSE_MAX_S):
            log.info("shutdown: calls still arriving after %gs of refusals; closing the port anyway", REFUSE_MAX_S)
        started = time.monotonic()
        stalled = await stop_server(self._server, options.grace_seconds, self.calls)
        if stalled:
            log.info("shutdown: cancelled %d health watch(es) whose clients read nothing", stalled)
        if self._admin_server is not None:
            await self._admin_server.stop(0)
        if time.monotonic() - started >= options.grace_seconds:
            log.info(
                "shutdown: port closed; grace of %gs expired, calls still running were ended (UNAVAILABLE)",
                options.grace_seconds,
            )
        else:
            log.info("shutdown: port closed; in-flight calls finished in %.2fs", time.monotonic() - started)
        if self.worker is not None:
            await self.worker.stop()
        await self.shadow.close()
        await self.manager.close()
        log.info("shutdown: models closed")
        await self.telemetry.stop()
        if self.access is not None:
            await self.access.stop()
        if self.audit is not None:
            self.audit.close()
        self._server = None
