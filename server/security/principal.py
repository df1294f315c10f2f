"""The principal of a call (defined in :mod:`server.core.principal` so telemetry can read it too)."""

from __future__ import annotations

from server.core.principal import Principal, current_principal

#: the source names a principal may carry
SOURCES = ("token", "jwt", "mtls", "anonymous")

__all__ = ["SOURCES", "Principal", "current_principal"]
