"""Model control (inferd.v1.ModelService) over a Client's channel: load, unload, relabel, shadow, list the repository.

    with Client("127.0.0.1:8001") as client:
        control = ModelControl(client)
        control.load("mlp_ranker")
        control.set_traffic("mlp_ranker", labels={"stable": 1, "canary": 2}, weights={"stable": 95, "canary": 5})
        control.set_shadow("mlp_ranker", label="canary", fraction=0.1)  # or clear_shadow("mlp_ranker")

With ``inferd serve --admin-port N`` the service is on its own port bound to 127.0.0.1: make a Client
for that address. Errors are the same typed exceptions as the Client's (``inferd.errors``). Requests
and replies are :mod:`inferd.requests`' (shared by the twins).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from inferd import requests as rpc
from inferd.client import AsyncClient, Client
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2

R = TypeVar("R")


class ModelControl:
    """Blocking model control over a Client's channel, timeout and metadata."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = admin_pb2_grpc.ModelServiceStub(client.channel)

    def _run(self, call: rpc.Call[R], timeout: float | None) -> R:
        # the client's timeout, metadata and errors
        return call.decode(self._client._unary(getattr(self._stub, call.method), call.request, timeout))

    def load(
        self, name: str, versions: Sequence[int] | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        """(Re)load from the repository; new versions warm up before traffic moves; returns the model's status."""
        return self._run(rpc.load(name, versions), timeout)

    def unload(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        """Drain and unload one version, or the whole model when ``version`` is None."""
        return self._run(rpc.unload(name, version), timeout)

    def set_traffic(
        self,
        name: str,
        labels: Mapping[str, int],
        weights: Mapping[str, int] | None = None,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.ModelStatus:
        """Replace the model's labels (label → version) and traffic weights (label → weight) atomically."""
        return self._run(rpc.set_traffic(name, labels, weights), timeout)

    def set_shadow(
        self,
        name: str,
        *,
        fraction: float,
        label: str | None = None,
        version: int | None = None,
        timeout: float | None = None,
    ) -> inference_pb2.ModelStatus:
        """Mirror ``fraction`` (0, 1] of the model's traffic to a label's or a version's slot (give one);
        answers are compared (ModelStatistics ``shadow``), never returned. Nothing reloads."""
        return self._run(rpc.set_shadow(name, fraction, label, version), timeout)

    def clear_shadow(self, name: str, *, timeout: float | None = None) -> inference_pb2.ModelStatus:
        """Stop mirroring; the shadow version keeps its statistics and keeps serving pinned requests."""
        return self._run(rpc.set_shadow(name, None, None, None), timeout)

    def repository_index(self, *, timeout: float | None = None) -> list[admin_pb2.RepositoryModel]:
        return self._run(rpc.repository_index(), timeout)

    def skipped_folders(self, *, timeout: float | None = None) -> list[admin_pb2.SkippedFolder]:
        """Folders of the repository that are not models, with why and how to fix each."""
        return self._run(rpc.skipped_folders(), timeout)


class AsyncModelControl:
    """The asyncio twin of ModelControl, over an AsyncClient."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = admin_pb2_grpc.ModelServiceStub(client.channel)

    async def _run(self, call: rpc.Call[R], timeout: float | None) -> R:
        return call.decode(await self._client._unary(getattr(self._stub, call.method), call.request, timeout))

    async def load(
        self, name: str, versions: Sequence[int] | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        return await self._run(rpc.load(name, versions), timeout)

    async def unload(
        self, name: str, version: int | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelStatus:
        return await self._run(rpc.unload(name, version), timeout)

    async def set_traffic(
        self,
        name: str,
        labels: Mapping[str, int],
        weights: Mapping[str, int] | None = None,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.ModelStatus:
        return await self._run(rpc.set_traffic(name, labels, weights), timeout)

    async def set_shadow(
        self,
        name: str,
        *,
        fraction: float,
        label: str | None = None,
        version: int | None = None,
        timeout: float | None = None,
    ) -> inference_pb2.ModelStatus:
        return await self._run(rpc.set_shadow(name, fraction, label, version), timeout)

    async def clear_shadow(self, name: str, *, timeout: float | None = None) -> inference_pb2.ModelStatus:
        return await self._run(rpc.set_shadow(name, None, None, None), timeout)

    async def repository_index(self, *, timeout: float | None = None) -> list[admin_pb2.RepositoryModel]:
        return await self._run(rpc.repository_index(), timeout)

    async def skipped_folders(self, *, timeout: float | None = None) -> list[admin_pb2.SkippedFolder]:
        """Folders of the repository that are not models, with why and how to fix each."""
        return await self._run(rpc.skipped_folders(), timeout)
