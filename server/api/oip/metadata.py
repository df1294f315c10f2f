"""OIP health and metadata answers (ModelReady, ServerMetadata, ModelMetadata, ModelConfig). O1 fills this in."""

from __future__ import annotations

from typing import Any

from server.api.inference import ServerInfo
from server.models.registry import Registry


def model_ready(registry: Registry, name: str, version: str) -> bool:
    raise NotImplementedError


def server_metadata(info: ServerInfo) -> Any:
    raise NotImplementedError


def model_metadata(registry: Registry, name: str, version: str) -> Any:
    raise NotImplementedError


def model_config(registry: Registry, name: str, version: str) -> Any:
    raise NotImplementedError
