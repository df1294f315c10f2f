"""The worker side of ``inferd serve --workers N``: what a server does differently when a supervisor runs it.

* a private control server on a unix socket (only this user can connect: no TLS, no auth there) with the
  real inferd.v1.ModelService, InferenceService (its ModelStatistics is this worker's own), the OIP
  repository methods and ``inferd.internal.Worker``: ``Loaded`` (answers once the repository is loaded),
  ``Open`` (the supervisor's go: the main port binds only then, after the control log was replayed),
  ``SetClusterHealth`` and ``OwnHealth``;
* on the shared main port, model control and ModelStatistics (inferd.v1 and OIP) are forwarded byte for
  byte to the supervisor, which fans them out to every worker (control) or sums them (statistics); its
  ``x-inferd-*`` trailing metadata is passed back to the caller;
* a worker whose supervisor was killed stops itself and removes its files from the supervisor's private
  folder (the last one out removes the folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferd.v1 import admin_pb2_grpc
from server.api.handler_wrapping import wrapped_server
from server.api.interceptors import ErrorStatusInterceptor
from server.workers.control_log import CONTROL_METHODS, STATISTICS_METHODS

if TYPE_CHECKING:
    from server.app import InferdServer

log = logging.getLogger("inferd")
INTERNAL_SERVICE = "inferd.internal.Worker"
#: metadata a forwarded call does not carry on: HTTP/2 pseudo and hop headers, and the caller's credentials
#: (the main port's security interceptor has already checked them; the supervisor's socket trusts its user)
_NOT_FORWARDED = frozenset(
    {"te", "connection", "content-type", "user-agent", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"}
    | {"authorization", "grpc-trace-bin", "grpc-tags-bin"}
)
#: how often a worker checks that its supervisor is still its parent (it stops if it was orphaned)
ORPHAN_CHECK_S = 1.0
#: the supervisor's private folder (tempfile.mkdtemp's prefix): an orphan removes only a folder named so
PRIVATE_DIR_PREFIX = "inferd-workers-"
#: in that folder: the supervisor's socket, and each worker's control socket and metrics port file
SUPERVISOR_SOCKET = "supervisor.sock"
#: the supervisor's metadata a forwarded reply passes back to the caller (``x-inferd-workers``)
_PASSED_BACK = "x-inferd-"


def worker_files(index: int) -> tuple[str, str]:
    """Worker ``index``'s control socket and metrics port file, as named in the private folder."""
    return f"worker-{index}.sock", f"metrics-{index}.port"


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """The hidden ``--worker-*`` flags: this server is worker ``index`` of a supervisor."""

    index: int
    control_address: str
    supervisor_address: str
    #: --admin-port was given to the supervisor: the main port serves no model control (as without workers)
    control_elsewhere: bool = False


def forwarded_metadata(metadata: Any) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata minus pseudo and hop headers."""
    return tuple(
        (key, value) for key, value in (metadata or ()) if not key.startswith(":") and key not in _NOT_FORWARDED
    )


def passed_back(metadata: Any) -> tuple[tuple[str, str | bytes], ...]:
    """The supervisor's own trailing metadata (``x-inferd-*``), for the caller."""
    return tuple((key, value) for key, value in (metadata or ()) if key.startswith(_PASSED_BACK))


class _Forward(grpc.GenericRpcHandler):
    """Model control (and ModelStatistics) on the main port → the supervisor, bytes in, bytes out."""

    def __init__(self, methods: frozenset[str], channel: Callable[[], grpc.aio.Channel]) -> None:
        self._methods = methods
        self._channel = channel

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method not in self._methods:
            return None

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            call = self._channel().unary_unary(method)(
                request, timeout=context.time_remaining(), metadata=forwarded_metadata(context.invocation_metadata())
            )
            try:
                reply: bytes = await call
            except grpc.aio.AioRpcError as err:
                code, trailer = err.code(), passed_back(err.trailing_metadata())
                if code == grpc.StatusCode.UNAVAILABLE and not trailer:  # not the supervisor's own answer
                    await context.abort(code, f"the workers' supervisor is not reachable: {err.details()}")
                await context.abort(code, err.details() or "", trailing_metadata=trailer)
            context.set_trailing_metadata(passed_back(await call.trailing_metadata()))
            return reply

        return grpc.unary_unary_rpc_method_handler(forward)


class WorkerControl:
    """Built by InferdServer when ``options.worker`` is set; drives its start in worker order."""

    def __init__(self, app: InferdServer, role: WorkerRole) -> None:
        self._app = app
        self.role = role
        self._server: grpc.aio.Server | None = None
        self._supervisor: grpc.aio.Channel | None = None
        self._loaded = asyncio.Event()
        self._go = asyncio.Event()
        self._open_result: asyncio.Future[int] | None = None
        self._orphan_watch: asyncio.Task[None] | None = None
        #: the supervisor is gone (SIGKILL): ``stop`` removes this worker's files from its private folder
        self.orphaned = False

    # -- the main port --------------------------------------------------------------------------

    def front_handlers(self, admin: bool) -> tuple[grpc.GenericRpcHandler, ...]:
        """Handlers the main port puts before its own: they answer control and statistics for all workers."""
        methods = frozenset(STATISTICS_METHODS | (CONTROL_METHODS if admin else set()))
        return (_Forward(methods, self._supervisor_channel),)

    def _supervisor_channel(self) -> grpc.aio.Channel:
        if self._supervisor is None:
            self._supervisor = grpc.aio.insecure_channel(self.role.supervisor_address)
        return self._supervisor

    # -- the start, in worker order -------------------------------------------------------------

    async def start_control(self) -> None:
        """The private control server, before the repository loads (the supervisor waits on ``Loaded``)."""
        app = self._app
        server = wrapped_server([ErrorStatusInterceptor()])  # applied per method, not per call
        admin_pb2_grpc.add_ModelServiceServicer_to_server(app.admin, server)
        health_pb2_grpc.add_HealthServicer_to_server(_OwnHealth(app), server)
        handlers = (app.servicer.handler(), app.oip.control_handler(), _oip_statistics(app), self._internal_handler())
        server.add_generic_rpc_handlers(handlers)
        if server.add_insecure_port(self.role.control_address) == 0:
            from server.app import StartupError

            raise StartupError(f"cannot listen on {self.role.control_address}")
        await server.start()
        self._server = server
        self._orphan_watch = asyncio.get_running_loop().create_task(self._stop_when_orphaned(os.getppid()))

    async def open(self, bind: Callable[[], int], main: grpc.aio.Server) -> int:
        """Repository loaded: say so, wait for the supervisor's go (after its replay), then bind and start
        the shared main port. A failure is reported to the supervisor's ``Open`` call and raised here."""
        self._loaded.set()
        await self._go.wait()
        assert self._open_result is not None
        try:
            port = bind()
            await main.start()
        except BaseException as exc:
            self._open_result.set_exception(exc)
            raise
        return port

    def serving(self, port: int) -> None:
        """The main port serves and health says SERVING: the supervisor's ``Open`` call returns."""
        if self._open_result is not None and not self._open_result.done():
            self._open_result.set_result(port)

    async def stop(self) -> None:
        if self._orphan_watch is not None:
            self._orphan_watch.cancel()
        if self._server is not None:
            await self._server.stop(0)
        if self._supervisor is not None:
            await self._supervisor.close()
        if self.orphaned:
            remove_private_files(self.role)

    async def _stop_when_orphaned(self, parent: int) -> None:
        """A worker whose supervisor died (SIGKILL) is re-parented: it stops itself with its normal drain."""
        while os.getppid() == parent:
            await asyncio.sleep(ORPHAN_CHECK_S)
        log.warning("worker: the supervisor (pid %d) is gone; stopping", parent)
        self.orphaned = True
        os.kill(os.getpid(), signal.SIGTERM)

    # -- inferd.internal.Worker -----------------------------------------------------------------

    def _internal_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            INTERNAL_SERVICE,
            {
                "Loaded": grpc.unary_unary_rpc_method_handler(self._on_loaded),
                "Open": grpc.unary_unary_rpc_method_handler(self._on_open),
                "SetClusterHealth": grpc.unary_unary_rpc_method_handler(self._on_cluster_health),
                "OwnHealth": grpc.unary_unary_rpc_method_handler(self._on_own_health),
            },
        )

    async def _on_loaded(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._loaded.wait()
        return b"{}"

    async def _on_open(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if self._open_result is None:
            self._open_result = asyncio.get_running_loop().create_future()
        self._go.set()
        try:
            port = await asyncio.shield(self._open_result)
        except Exception as exc:  # the bind failed: the supervisor stops (it quotes our stderr)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return json.dumps({"port": port}).encode()

    async def _on_cluster_health(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            view = json.loads(request)
            if not isinstance(view, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cluster health is not a JSON object: {exc}")
        self._app.health.set_cluster({str(k): bool(v) for k, v in view.items()})
        return b"{}"

    async def _on_own_health(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return json.dumps(self._app.health.own_serving()).encode()


class _OwnHealth(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 Check on the private socket: this worker's own status, before the cluster's verdict."""

    def __init__(self, app: InferdServer) -> None:
        self._app = app

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        serving = self._app.health.own_serving().get(request.service)
        if serving is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown health service")
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


def _oip_statistics(app: InferdServer) -> grpc.GenericRpcHandler:
    """OIP ModelStatistics on the private socket: this worker's own counters, for the supervisor to sum."""
    from inferd.oip.v2 import grpc_service_pb2 as oip

    handler = grpc.unary_unary_rpc_method_handler(
        app.oip.model_statistics,
        request_deserializer=oip.ModelStatisticsRequest.FromString,
        response_serializer=oip.ModelStatisticsResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelStatistics": handler})


def remove_private_files(role: WorkerRole) -> None:
    """Best effort, after a killed supervisor: this worker's socket and metrics port file, the dead
    supervisor's socket, then the folder if that left it empty (the last worker out removes it)."""
    socket_path = role.control_address.removeprefix("unix:")
    folder = os.path.dirname(socket_path)
    if not os.path.basename(folder).startswith(PRIVATE_DIR_PREFIX):
        return  # not a folder a supervisor made: leave it alone
    names = (*worker_files(role.index), SUPERVISOR_SOCKET)
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))
    try:
        os.rmdir(folder)
    except OSError:  # another worker still has its files there, or it is gone already
        return
    log.info("worker: removed the supervisor's folder %s", folder)
