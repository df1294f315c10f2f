"""grpc.health.v1: the server (""), the inference service, and one service per model (``model/<name>``).

A model is SERVING when one of its versions is READY. Loading or failing one model never touches the
server's own status or another model's.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def model_service(name: str) -> str:
    return f"model/{name}"


class Health:
    def __init__(self, server_services: tuple[str, ...]) -> None:
        self._servicer = health.aio.HealthServicer()
        self._server_services = ("", *server_services)

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def set_server(self, serving: bool) -> None:
        for service in self._server_services:
            await self._servicer.set(service, SERVING if serving else NOT_SERVING)

    async def set_model(self, name: str, serving: bool) -> None:
        await self._servicer.set(model_service(name), SERVING if serving else NOT_SERVING)

    async def shutdown(self) -> None:
        """Everything NOT_SERVING, for good: the first step of a graceful drain."""
        await self._servicer.enter_graceful_shutdown()
