"""``inference.GRPCInferenceService``: method table and the small RPCs; inference lives in infer.py and stream.py.

Registered on the main port next to inferd.v1. Its repository RPCs (load, unload, index) are model control:
with ``--admin-port`` they are served there only, like inferd.v1.ModelService, and the main port answers them
PERMISSION_DENIED naming the admin port.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from inferd.oip.v2 import grpc_service_pb2 as pb
from server.api.health import Health
from server.api.inference import InferenceServicer, ServerInfo
from server.api.oip import metadata, repository, statistics
from server.api.oip.infer import OipInference
from server.api.oip.stream import OipStreams
from server.core.errors import PermissionDenied, Unimplemented
from server.models.manager import ModelManager

SERVICE_NAME = "inference.GRPCInferenceService"
#: Triton extensions this server does not implement (each answers UNIMPLEMENTED saying so)
_UNIMPLEMENTED: dict[str, tuple[Any, Any, str]] = {
    "SystemSharedMemoryStatus": (pb.SystemSharedMemoryStatusRequest, pb.SystemSharedMemoryStatusResponse, "shm"),
    "SystemSharedMemoryRegister": (pb.SystemSharedMemoryRegisterRequest, pb.SystemSharedMemoryRegisterResponse, "shm"),
    "SystemSharedMemoryUnregister": (
        pb.SystemSharedMemoryUnregisterRequest,
        pb.SystemSharedMemoryUnregisterResponse,
        "shm",
    ),
    "CudaSharedMemoryStatus": (pb.CudaSharedMemoryStatusRequest, pb.CudaSharedMemoryStatusResponse, "shm"),
    "CudaSharedMemoryRegister": (pb.CudaSharedMemoryRegisterRequest, pb.CudaSharedMemoryRegisterResponse, "shm"),
    "CudaSharedMemoryUnregister": (pb.CudaSharedMemoryUnregisterRequest, pb.CudaSharedMemoryUnregisterResponse, "shm"),
    "TraceSetting": (pb.TraceSettingRequest, pb.TraceSettingResponse, "trace"),
    "LogSettings": (pb.LogSettingsRequest, pb.LogSettingsResponse, "log"),
}
_WHY = {
    "shm": "inferd does not implement the shared-memory extension; send tensors in the request "
    "(raw_input_contents is the fast path)",
    "trace": "inferd traces with OpenTelemetry, configured by the OTEL_* environment variables (docs/operations.md)",
    "log": "inferd's log level is set by `inferd serve --log-level`",
}
CONTROL_METHODS = ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")


def _unary(behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], request: Any, response: Any) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )


class OipServicer:
    """One instance per server; ``control`` says whether this port serves the repository RPCs."""

    def __init__(self, inference: InferenceServicer, manager: ModelManager, health: Health, info: ServerInfo) -> None:
        self._inference = inference
        self._registry = inference.registry
        self._manager = manager
        self._health = health
        self._info = info
        self.infer = OipInference(inference)
        self.streams = OipStreams(self.infer)
        self.repository = repository.OipRepository(manager)

    # -- health and metadata --------------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self._health.server_serving)

    async def model_ready(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ModelReadyResponse(ready=metadata.model_ready(self._registry, request.name, request.version))

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        return metadata.server_metadata(self._info)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        return metadata.model_metadata(self._registry, request.name, request.version)

    async def model_config(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext) -> Any:
        return metadata.model_config(self._registry, request.name, request.version)

    async def model_statistics(self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext) -> Any:
        return statistics.model_statistics(self._registry, request.name, request.version)

    # -- model control --------------------------------------------------------------------------

    async def repository_index(self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self.repository.index(request)

    async def repository_load(self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self.repository.load(request)

    async def repository_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await self.repository.unload(request)

    # -- the method table -----------------------------------------------------------------------

    def _control_handlers(self, served: bool) -> dict[str, grpc.RpcMethodHandler]:
        behaviours: dict[str, tuple[Any, Any, Any]] = {
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
            "RepositoryModelLoad": (
                self.repository_load,
                pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse,
            ),
            "RepositoryModelUnload": (
                self.repository_unload,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
            ),
        }
        handlers = {}
        for name, (behaviour, request, response) in behaviours.items():
            handlers[name] = _unary(behaviour if served else _elsewhere(name), request, response)
        return handlers

    def handler(self, *, control: bool) -> grpc.GenericRpcHandler:
        """Every method, for the main port; ``control=False`` when --admin-port serves model control."""
        methods: dict[str, grpc.RpcMethodHandler] = {
            "ServerLive": _unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": _unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": _unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": _unary(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": _unary(self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelConfig": _unary(self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
            "ModelStatistics": _unary(self.model_statistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
            # raw bytes in and out: the size limits are checked with messages naming the flags
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self.infer.model_infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.streams.model_stream_infer),
            **self._control_handlers(control),
        }
        for name, (request, response, why) in _UNIMPLEMENTED.items():
            methods[name] = _unary(_unimplemented(name, _WHY[why]), request, response)
        return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)

    def control_handler(self) -> grpc.GenericRpcHandler:
        """The repository methods alone, for the admin port."""
        return grpc.method_handlers_generic_handler(SERVICE_NAME, self._control_handlers(True))


def _unimplemented(name: str, why: str) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise Unimplemented(f"{SERVICE_NAME}/{name} is not implemented: {why}")

    return refuse


def _elsewhere(name: str) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise PermissionDenied(
            f"{SERVICE_NAME}/{name} is model control, served on the admin port (--admin-port), not this one"
        )

    return refuse
