"""The composition root: builds the registry, servicers, health and the gRPC server, and runs them.

Nothing else constructs long-lived objects; every background task starts in ``start`` and is awaited
in ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection

from engines.base import available_backends
from server import __version__
from server.health import Health
from server.interceptors import ErrorStatusInterceptor
from server.registry import ModelEntry, Registry
from server.repository import ModelSource, Repository
from server.servicer import SERVICE_NAME, InferenceServicer, MessageLimits, ServerInfo
from server.slot import Slot

log = logging.getLogger("inferd")
_MiB = 1024 * 1024


class StartupError(Exception):
    """The server cannot start (e.g. its port is taken)."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    repository: Path
    host: str = "127.0.0.1"
    port: int = 8001
    max_receive_message_mb: int = 64
    max_send_message_mb: int = 64
    #: Let several processes share the port (SO_REUSEPORT). Off: a busy port fails loudly.
    reuse_port: bool = False
    #: Seconds between NOT_SERVING and closing the port on shutdown (lets the mesh move traffic).
    drain_seconds: float = 0.0
    #: Seconds in-flight RPCs get to finish once the port is closing.
    grace_seconds: float = 10.0
    device: str = "cpu"


def grpc_options(options: ServerOptions) -> list[tuple[str, int]]:
    """Transport limits sit above ours so oversize messages reach our handler and get a clear message."""
    receive = options.max_receive_message_mb * _MiB
    send = options.max_send_message_mb * _MiB
    return [
        ("grpc.max_receive_message_length", receive * 2 + _MiB),
        ("grpc.max_send_message_length", send + _MiB),
        ("grpc.so_reuseport", 1 if options.reuse_port else 0),
    ]


class InferdServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.repository = Repository(options.repository)
        self.health = Health((SERVICE_NAME,))
        self.registry = Registry(on_health_change=self.health.set_model)
        self.limits = MessageLimits(
            max_receive_bytes=options.max_receive_message_mb * _MiB,
            max_send_bytes=options.max_send_message_mb * _MiB,
        )
        self.info = ServerInfo(
            name="inferd",
            version=__version__,
            engines=tuple(available_backends()),
            extensions=("health", "reflection", "streaming", "chunked-outputs"),
            started=time.monotonic(),
        )
        self.servicer = InferenceServicer(self.registry, self.limits, self.info)
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self._stopped = asyncio.Event()

    def _build_grpc_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[ErrorStatusInterceptor()], options=grpc_options(self.options))
        server.add_generic_rpc_handlers((self.servicer.handler(),))
        self.health.add_to(server)
        reflection.enable_server_reflection((SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME), server)
        return server

    async def start(self) -> int:
        """Bind, start answering (health NOT_SERVING), load the repository, then report SERVING."""
        server = self._build_grpc_server()
        address = f"{self.options.host}:{self.options.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {address}: {exc} (is another server using the port?)") from None
        if port == 0:
            raise StartupError(f"cannot listen on {address} (is another server using the port?)")
        self._server, self.port = server, port
        await self.health.set_server(False)
        await server.start()
        await self.load_repository()
        await self.health.set_server(True)
        log.info("inferd %s serving on %s:%d", __version__, self.options.host, port)
        return port

    async def load_model(self, source: ModelSource) -> ModelEntry:
        """Load the versions a model's policy selects; a failure is recorded, never raised."""
        if source.spec is None:
            entry = ModelEntry(source.name, None, {}, source.error)
            log.error("model %s cannot be read: %s", source.name, source.error)
            await self.registry.publish(entry)
            return entry
        slots = {
            v: Slot(source.spec, v, source.versions[v], device=self.options.device) for v in source.versions_to_load()
        }
        error = None if slots else f"no version folder in {source.directory} matches the version policy"
        await asyncio.gather(*(slot.load() for slot in slots.values()))
        entry = ModelEntry(source.name, source.spec, slots, error)
        await self.registry.publish(entry)
        return entry

    async def load_repository(self) -> None:
        sources = self.repository.scan()
        await asyncio.gather(*(self.load_model(source) for source in sources))
        for entry in self.registry.models():
            states = ", ".join(f"v{v}={s.state.value}" for v, s in sorted(entry.slots.items())) or entry.error
            log.info("model %s: %s", entry.name, states)

    async def stop(self) -> None:
        """Graceful drain: NOT_SERVING, wait drain_seconds, stop accepting, finish in-flight, close engines."""
        if self._server is None:
            return
        await self.health.shutdown()
        if self.options.drain_seconds > 0:
            await asyncio.sleep(self.options.drain_seconds)
        await self._server.stop(self.options.grace_seconds)
        for entry in self.registry.models():
            await asyncio.gather(*(slot.drain_and_close("server stopped") for slot in entry.slots.values()))
        self._server = None
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
