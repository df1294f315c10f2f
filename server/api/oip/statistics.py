"""OIP ModelStatistics in Triton's message format. O1 fills this in."""

from __future__ import annotations

from typing import Any

from server.models.registry import Registry


def model_statistics(registry: Registry, name: str, version: str) -> Any:
    raise NotImplementedError
