"""grpc.health.v1, served by inferd itself: the server (``""``), the inference service, and one service
per model (``model/<name>``).

A model is SERVING when one of its versions is READY. Loading or failing one model never touches the
server's own status or another model's.

Why not grpc_health's servicer: it writes to a watcher while holding a lock that status updates also
take, so one client that opens Watch and never reads (grants no HTTP/2 window) made every update wait
for it — and inferd awaits updates on its load path and at the start of shutdown. Here an update only
records the status and drops it into each watcher's one-slot mailbox (latest wins); it never waits on a
watcher. Each Watch handler sends from its own mailbox, so a stalled client stalls only its own stream.
At shutdown every Watch is sent NOT_SERVING and then ends, so an open Watch never holds the server's
grace period; a watcher that does not read even that is given up on after ``FINAL_WRITE_S``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api.live_calls import give_up
from server.core.echo import echo

Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

#: how long a Watch, once the server stops, may take to send its last NOT_SERVING; after that the call gives
#: up (its client reads nothing) and is cancelled when the port closes instead of holding the grace period
FINAL_WRITE_S = 0.25
#: Health/List answers RESOURCE_EXHAUSTED above this many services (the spec asks for a server-set limit)
LIST_LIMIT = 10_000


def model_service(name: str) -> str:
    return f"model/{name}"


class _Mailbox:
    """One watcher's latest status: a put never waits and overwrites what the watcher has not sent yet."""

    __slots__ = ("changed", "status", "stopped")

    def __init__(self, status: Status) -> None:
        self.status = status
        self.changed = asyncio.Event()
        self.changed.set()
        #: set once, when the server stops: send what is pending (NOT_SERVING), then end the stream
        self.stopped = asyncio.Event()

    def put(self, status: Status) -> None:
        self.status = status
        self.changed.set()

    def stop(self) -> None:
        self.put(NOT_SERVING)
        self.stopped.set()


class Health(health_pb2_grpc.HealthServicer):
    """Statuses in a dict (Check and List read it) and one mailbox per open Watch.

    ``set_server``, ``set_model`` and ``shutdown`` are coroutines only to fit their callers (the
    registry awaits its health listener); none of them awaits anything.
    """

    def __init__(self, server_services: tuple[str, ...]) -> None:
        self._server_services = ("", *server_services)
        self._statuses: dict[str, Status] = dict.fromkeys(self._server_services, NOT_SERVING)
        self._watchers: dict[str, set[_Mailbox]] = {}
        self._stopped = False
        #: under a workers' supervisor (server/workers/): model service → SERVING on every worker; None = alone
        self._cluster: dict[str, bool] | None = None

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self, server)

    @property
    def server_serving(self) -> bool:
        """The server as a whole is SERVING (started, models loaded, not shutting down)."""
        return self._statuses.get("") == SERVING

    # -- updates (never wait on a watcher) ------------------------------------------------------

    async def set_server(self, serving: bool) -> None:
        for service in self._server_services:
            self._set(service, SERVING if serving else NOT_SERVING)

    async def set_model(self, name: str, serving: bool) -> None:
        self._set(model_service(name), SERVING if serving else NOT_SERVING)

    async def shutdown(self) -> None:
        """Everything NOT_SERVING for good, and every Watch ends: the first step of a graceful drain."""
        self._stopped = True
        for service in self._statuses:
            self._statuses[service] = NOT_SERVING
        for mailboxes in self._watchers.values():
            for mailbox in mailboxes:
                mailbox.stop()

    def _set(self, service: str, status: Status) -> None:
        if self._stopped:
            return
        self._statuses[service] = status
        for mailbox in self._watchers.get(service, ()):
            mailbox.put(self._effective(service, status))

    # -- workers: the cluster's view (server/workers/worker_mode.py) ---------------------------

    def set_cluster(self, view: Mapping[str, bool]) -> None:
        """A model is SERVING here only when it serves here and the supervisor says it serves on every worker
        (a load balancer then never sends a model's traffic to a port where some connections lack it).
        The server's own services ("" and the service names) stay this process's own."""
        if self._stopped:
            return
        self._cluster = dict(view)
        for service, mailboxes in self._watchers.items():
            status = self._statuses.get(service)
            if status is not None:
                for mailbox in mailboxes:
                    mailbox.put(self._effective(service, status))

    def own_serving(self) -> dict[str, bool]:
        """This process's own view, before the cluster's: service → SERVING."""
        return {service: status == SERVING for service, status in self._statuses.items()}

    def _effective(self, service: str, status: Status) -> Status:
        cluster = self._cluster
        if cluster is None or status != SERVING or service in self._server_services:
            return status
        return SERVING if cluster.get(service, False) else NOT_SERVING

    # -- the RPCs -------------------------------------------------------------------------------

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown health service {echo(request.service)}")
        return health_pb2.HealthCheckResponse(status=self._effective(request.service, status))

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        if len(self._statuses) > LIST_LIMIT:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{len(self._statuses)} health services, more than Health/List returns ({LIST_LIMIT}); use Check",
            )
        reply = health_pb2.HealthListResponse()
        for service, status in self._statuses.items():
            reply.statuses[service].status = self._effective(service, status)
        return reply

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """The current status (SERVICE_UNKNOWN for an unknown service), then each change; ends when the
        server stops, after a last NOT_SERVING."""
        service = request.service
        known = self._statuses.get(service)
        mailbox = _Mailbox(SERVICE_UNKNOWN if known is None else self._effective(service, known))
        if self._stopped:
            mailbox.stop()
        watchers = self._watchers.setdefault(service, set())
        watchers.add(mailbox)
        try:
            # the headers now, on their own: a status sent later can then never collide with a message
            # still waiting for the client's window (gRPC refuses the batch and the call is stuck)
            await context.send_initial_metadata(())
            sent: Status | None = None
            while True:
                await mailbox.changed.wait()
                mailbox.changed.clear()
                if mailbox.status != sent:
                    sent = mailbox.status
                    await _send(context, sent, mailbox.stopped)
                if mailbox.stopped.is_set() and not mailbox.changed.is_set():
                    return  # the last status (NOT_SERVING) is out
        finally:
            watchers.discard(mailbox)
            if not watchers and self._watchers.get(service) is watchers:
                del self._watchers[service]


async def _send(context: grpc.aio.ServicerContext, status: Status, stopped: asyncio.Event) -> None:
    """Write one status. Once the server stops, a client that has not taken it within ``FINAL_WRITE_S``
    grants no flow-control window and never will: the call gives up (so it does not hold the server's
    stop, :mod:`server.api.live_calls`) and waits here until the client reads or the call is cancelled."""
    write = asyncio.ensure_future(context.write(health_pb2.HealthCheckResponse(status=status)))
    try:
        stop = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait((write, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not write.done():
            await asyncio.wait((write,), timeout=FINAL_WRITE_S)
        if not write.done():
            give_up()
        await write
    finally:
        write.cancel()
