"""OIP repository control (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload). O1 fills this in."""

from __future__ import annotations

from typing import Any

from server.models.manager import ModelManager


class OipRepository:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    async def index(self, request: Any) -> Any:
        raise NotImplementedError

    async def load(self, request: Any) -> Any:
        raise NotImplementedError

    async def unload(self, request: Any) -> Any:
        raise NotImplementedError
