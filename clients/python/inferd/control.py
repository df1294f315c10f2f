"""Model control (inferd.v1.ModelService) over a Client's channel: load, unload, relabel, list the repository.

    with Client("127.0.0.1:8001") as client:
        control = ModelControl(client)
        control.load("mlp_ranker")
        control.set_traffic("mlp_ranker", labels={"stable": 1, "canary": 2}, weights={"stable": 95, "canary": 5})

With ``inferd serve --admin-port N`` the service is on its own port bound to 127.0.0.1: make a Client
for that address. Errors are the same typed exceptions as the Client's (``inferd.errors``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inferd.client import AsyncClient, Client
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, model_config_pb2


def _traffic_request(
    name: str, labels: Mapping[str, int], weights: Mapping[str, int] | None
) -> admin_pb2.SetTrafficRequest:
    return admin_pb2.SetTrafficRequest(
        name=name,
        version_labels=dict(labels),
        traffic=[model_config_pb2.TrafficWeight(label=k, weight=v) for k, v in (weights or {}).items()],
    )


class ModelControl:
    """Blocking model control over a Client's channel, timeout and metadata."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = admin_pb2_grpc.ModelServiceStub(client.channel)

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        return self._client._unary(method, request, timeout)  # the client's timeout, metadata and errors

    def load(
        self, name: str, versions: Sequence[int] | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        """(Re)load from the repository; new versions warm up before traffic moves; returns the model's status."""
        request = admin_pb2.LoadModelRequest(name=name, versions=list(versions or ()))
        return self._call(self._stub.LoadModel, request, timeout).status

    def unload(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        """Drain and unload one version, or the whole model when ``version`` is None."""
        request = admin_pb2.UnloadModelRequest(name=name, version=version or 0)
        return self._call(self._stub.UnloadModel, request, timeout).status

    def set_traffic(
        self,
        name: str,
        labels: Mapping[str, int],
        weights: Mapping[str, int] | None = None,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.ModelStatus:
        """Replace the model's labels (label → version) and traffic weights (label → weight) atomically."""
        return self._call(self._stub.SetTraffic, _traffic_request(name, labels, weights), timeout).status

    def repository_index(self, *, timeout: float | None = None) -> list[admin_pb2.RepositoryModel]:
        return list(self._call(self._stub.RepositoryIndex, admin_pb2.RepositoryIndexRequest(), timeout).models)


class AsyncModelControl:
    """The asyncio twin of ModelControl, over an AsyncClient."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = admin_pb2_grpc.ModelServiceStub(client.channel)

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        return await self._client._unary(method, request, timeout)

    async def load(
        self, name: str, versions: Sequence[int] | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        request = admin_pb2.LoadModelRequest(name=name, versions=list(versions or ()))
        return (await self._call(self._stub.LoadModel, request, timeout)).status

    async def unload(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        request = admin_pb2.UnloadModelRequest(name=name, version=version or 0)
        return (await self._call(self._stub.UnloadModel, request, timeout)).status

    async def set_traffic(
        self,
        name: str,
        labels: Mapping[str, int],
        weights: Mapping[str, int] | None = None,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.ModelStatus:
        return (await self._call(self._stub.SetTraffic, _traffic_request(name, labels, weights), timeout)).status

    async def repository_index(self, *, timeout: float | None = None) -> list[admin_pb2.RepositoryModel]:
        reply = await self._call(self._stub.RepositoryIndex, admin_pb2.RepositoryIndexRequest(), timeout)
        return list(reply.models)
