"""inferd.v1.ModelService: load, unload, relabel and re-weight models on a running server."""

from __future__ import annotations

import grpc

from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2
from server.api.views import model_status, version_status
from server.core.errors import InvalidArgument
from server.models.config import ShadowSpec
from server.models.manager import ModelManager
from server.models.registry import ModelEntry
from server.models.repository import RepositoryError

SERVICE_NAME = "inferd.v1.ModelService"


def _status(name: str, entry: ModelEntry | None) -> inference_pb2.ModelStatus:
    return model_status(entry) if entry is not None else inference_pb2.ModelStatus(name=name)


class ModelServicer(admin_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    async def LoadModel(
        self, request: admin_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.LoadModelResponse:
        if not request.name:
            raise InvalidArgument("name is empty")
        # the load is a task of the manager; this call only waits for it, so a client that cancels (or
        # whose deadline passes) leaves the load running to READY or FAILED, never stuck in LOADING
        entry = await self._manager.load(request.name, list(request.versions) or None)
        return admin_pb2.LoadModelResponse(status=_status(request.name, entry))

    async def UnloadModel(
        self, request: admin_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UnloadModelResponse:
        entry = await self._manager.unload(request.name, request.version)
        return admin_pb2.UnloadModelResponse(status=_status(request.name, entry))

    async def SetTraffic(
        self, request: admin_pb2.SetTrafficRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetTrafficResponse:
        traffic = tuple((w.label, int(w.weight)) for w in request.traffic)
        entry = await self._manager.set_traffic(request.name, dict(request.version_labels), traffic)
        return admin_pb2.SetTrafficResponse(status=_status(request.name, entry))

    async def SetShadow(
        self, request: admin_pb2.SetShadowRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetShadowResponse:
        if request.off == request.HasField("shadow"):
            raise InvalidArgument("SetShadow needs exactly one of shadow (to mirror) and off: true (to stop)")
        policy = request.shadow
        shadow = (
            ShadowSpec(fraction=policy.fraction, label=policy.label, version=policy.version)
            if request.HasField("shadow")
            else None
        )
        entry = await self._manager.set_shadow(request.name, shadow)
        return admin_pb2.SetShadowResponse(status=_status(request.name, entry))

    async def RepositoryIndex(
        self, request: admin_pb2.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RepositoryIndexResponse:
        response = admin_pb2.RepositoryIndexResponse()
        repository = self._manager.repository
        for name in repository.model_names():
            try:
                source = repository.read_model(name)
            except RepositoryError as exc:
                response.models.add(name=name, reason=str(exc))
                continue
            entry = self._manager.registry.get(name)
            response.models.add(
                name=name,
                versions_on_disk=sorted(source.versions),
                loaded=[version_status(entry, entry.slots[v]) for v in sorted(entry.slots)] if entry else [],
                reason=source.error or "",
            )
        for skipped in repository.skipped():
            response.skipped.add(folder=skipped.folder, reason=skipped.reason)
        return response
