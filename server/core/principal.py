"""Who a call is for: the authenticated principal and the call's context variable.

It lives in ``core`` (plain data) so that telemetry's access log can read the principal without importing
``server.security``, which sits above telemetry; ``server.security.principal`` re-exports both names.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a name, its roles, and how it proved who it is."""

    name: str
    roles: frozenset[str]
    #: "token" | "jwt" | "mtls" | "anonymous"
    source: str


#: The principal of the call this task serves; None when no auth config is installed (or for open methods).
current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
