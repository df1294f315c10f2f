"""OIP health and metadata answers: ModelReady, ServerMetadata, ModelMetadata and ModelConfig.

They describe the same registry entries as inferd.v1's ModelMetadata, in Triton's vocabulary: platform
strings for engines, dtype names for datatypes, and ModelConfig with ``TYPE_*`` enums and dims without the
batch dimension (Triton's convention; inferd's config.pbtxt writes the batch dimension as a leading -1).
"""

from __future__ import annotations

import re
from typing import Any

from engines.base import backend_for_artifact
from inferd.oip.v2 import grpc_service_pb2 as pb
from server.api.inference import ServerInfo
from server.core.echo import echo, listing
from server.core.errors import InvalidArgument, NotFound, ServingError, Unavailable
from server.models.config import ModelSpec
from server.models.registry import ModelEntry, Registry
from server.models.slot import Slot

#: Triton's extension names for what this server really does over OIP (no shared memory, trace or logging
#: settings, sequences or classification: docs/protocol.md, "Open Inference Protocol v2")
EXTENSIONS = ("model_repository", "model_configuration", "schedule_policy", "statistics", "parameters")

#: inferd engine → (Triton platform, Triton backend); python models have a backend and no platform
PLATFORMS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime_onnx", "onnxruntime"),
    "torch": ("pytorch_libtorch", "pytorch"),
    "tensorrt": ("tensorrt_plan", "tensorrt"),
    "python": ("", "python"),
    "generative": ("", "python"),
}

_VERSION = re.compile(r"[0-9]{1,18}")


def parse_version(text: str) -> int | None:
    """An OIP ``version`` string: "" = the routing default (None), "N" = version N; anything else is refused."""
    if not text:
        return None
    if not _VERSION.fullmatch(text) or int(text) == 0:
        raise InvalidArgument(
            f'version {echo(text)} is not a version number: send a positive number such as "1", '
            'or "" for the version the model\'s routing picks'
        )
    return int(text)


def data_type(dtype: str) -> int:
    """inferd's dtype name → Triton's DataType enum (BYTES is Triton's TYPE_STRING)."""
    return int(pb.DataType.Value("TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}"))


def model_ready(registry: Registry, name: str, version: str) -> bool:
    """The version (or, for "", the one routing picks) is READY; an unknown model or version is just not."""
    wanted = parse_version(version)
    entry = registry.get(name)
    if entry is None:
        return False
    if wanted is not None:
        slot = entry.slots.get(wanted)
        return slot is not None and slot.ready
    try:
        registry.route(name, split=False)
    except ServingError:
        return False
    return True


def server_metadata(info: ServerInfo) -> Any:
    return pb.ServerMetadataResponse(name=info.name, version=info.version, extensions=EXTENSIONS)


def _described(registry: Registry, name: str, version: str) -> tuple[ModelEntry, ModelSpec, Slot | None]:
    """The entry, its spec and the slot a metadata answer describes (None: no version is READY)."""
    wanted = parse_version(version)
    entry = registry.entry(name)
    if wanted is not None and wanted not in entry.slots:
        raise NotFound(
            f"model {echo(entry.name)} version {wanted} not found (versions: {listing(sorted(entry.slots), 8)})"
        )
    if entry.spec is None:
        raise Unavailable(f"model {echo(entry.name)} is not available: {entry.error or 'its config cannot be read'}")
    if wanted is not None:
        return entry, entry.spec, entry.slots[wanted]
    try:
        return entry, entry.spec, registry.route(entry.name, split=False)
    except ServingError:
        return entry, entry.spec, None  # nothing READY: describe the config alone


def _engine(spec: ModelSpec, slot: Slot | None) -> str:
    """The engine serving the version, else the one its config or its artefact would pick."""
    if slot is not None and slot.backend:
        return slot.backend
    if spec.engines:
        return spec.engines[0]
    return (backend_for_artifact(slot.version_dir) if slot is not None else None) or ""


def model_metadata(registry: Registry, name: str, version: str) -> Any:
    """Shapes include the batch dimension (-1 first when max_batch_size > 0), as Triton's do."""
    entry, spec, slot = _described(registry, name, version)
    platform, backend = PLATFORMS.get(_engine(spec, slot), ("", ""))
    response = pb.ModelMetadataResponse(
        name=entry.name,
        versions=[str(v) for v in sorted(entry.ready_versions())],
        platform=platform or backend,
    )
    for sig in spec.signature.inputs:
        response.inputs.add(name=sig.name, datatype=sig.dtype, shape=sig.dims)
    for sig in spec.signature.outputs:
        response.outputs.add(name=sig.name, datatype=sig.dtype, shape=sig.dims)
    return response


def model_config(registry: Registry, name: str, version: str) -> Any:
    """Triton's ModelConfig for the version (the config is per model; the version picks engine and device)."""
    entry, spec, slot = _described(registry, name, version)
    platform, backend = PLATFORMS.get(_engine(spec, slot), ("", ""))
    batched = spec.max_batch_size > 0
    config = pb.ModelConfig(name=entry.name, platform=platform, backend=backend, max_batch_size=spec.max_batch_size)
    for sig in spec.signature.inputs:
        config.input.add(name=sig.name, data_type=data_type(sig.dtype), dims=sig.dims[1:] if batched else sig.dims)
    for sig in spec.signature.outputs:
        config.output.add(name=sig.name, data_type=data_type(sig.dtype), dims=sig.dims[1:] if batched else sig.dims)
    policy = spec.version_policy
    if policy.kind == "all":
        config.version_policy.all.SetInParent()
    elif policy.kind == "specific":
        config.version_policy.specific.versions.extend(policy.versions)
    else:
        config.version_policy.latest.num_versions = policy.num_versions
    batching = spec.batching
    if batching is not None:
        dynamic = config.dynamic_batching
        dynamic.preferred_batch_size.extend(batching.preferred_batch_sizes)
        dynamic.max_queue_delay_microseconds = batching.max_queue_delay_us
        dynamic.priority_levels = batching.priority_levels
        dynamic.default_priority_level = batching.default_priority_level
        queue = dynamic.default_queue_policy
        queue.max_queue_size = batching.max_queue_size
        queue.default_timeout_microseconds = batching.default_timeout_us
        queue.allow_timeout_override = True  # a request's deadline or `timeout` parameter applies
    device = slot.device if slot is not None else "cpu"
    group = config.instance_group.add(name=f"{entry.name}_0", count=spec.instance_count)
    if device.startswith("cuda"):
        group.kind = pb.ModelInstanceGroup.KIND_GPU
        index = device.partition(":")[2]
        group.gpus.append(int(index) if index.isdigit() else 0)
    else:
        group.kind = pb.ModelInstanceGroup.KIND_CPU
    for key, value in sorted(spec.parameters.items()):
        config.parameters[key].string_value = value
    # decoupled: ModelStreamInfer answers a request with several responses (a generative model, or a python
    # model with infer_stream); a model that has only infer_stream also refuses unary ModelInfer
    if slot is not None and slot.ready:
        config.model_transaction_policy.decoupled = slot.streams is not None
    else:
        config.model_transaction_policy.decoupled = "generative" in spec.engines
    return pb.ModelConfigResponse(config=config)
