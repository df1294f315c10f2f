"""Method → what it does, for authorization: every method the server offers has a rule or is denied.

Actions: ``open`` (no credentials needed: health, reflection, OIP liveness/readiness — the config's
``open_methods`` globs), ``predict`` on a model, ``read`` (metadata, statistics, listings) on a model or on
the server, ``control`` (load, unload, traffic, shadow). A method with no rule is refused with
PERMISSION_DENIED "method X has no authorization rule", so a service added later cannot slip through
unguarded: tests/unit/test_authorization.py lists every method the server registers and asserts each has a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from server.security.wire_model import wire_model_name

OPEN, PREDICT, READ, CONTROL = "open", "predict", "read", "control"


@dataclass(frozen=True, slots=True)
class Rule:
    action: str
    #: the request field naming the model (raw-bytes requests: top-level field 1); None = not about one model
    model_field: str | None = None
    #: an empty model name means every model (ModelStatistics)
    empty_means_all: bool = False


_INFERD = "/inferd.v1.InferenceService/"
_ADMIN = "/inferd.v1.ModelService/"
_OIP = "/inference.GRPCInferenceService/"

#: exact method → rule
RULES: dict[str, Rule] = {
    _INFERD + "Predict": Rule(PREDICT, "model_name"),
    _INFERD + "PredictStream": Rule(PREDICT, "model_name"),
    _INFERD + "Feedback": Rule(PREDICT, "model_name"),
    _INFERD + "ModelMetadata": Rule(READ, "name"),
    _INFERD + "ModelStatistics": Rule(READ, "name", empty_means_all=True),
    _INFERD + "ListModels": Rule(READ),
    _INFERD + "ServerMetadata": Rule(READ),
    _OIP + "ModelInfer": Rule(PREDICT, "model_name"),
    _OIP + "ModelStreamInfer": Rule(PREDICT, "model_name"),
    _OIP + "ModelReady": Rule(READ, "name"),
    _OIP + "ModelMetadata": Rule(READ, "name"),
    _OIP + "ModelConfig": Rule(READ, "name"),
    _OIP + "ModelStatistics": Rule(READ, "name", empty_means_all=True),
    _OIP + "ServerMetadata": Rule(READ),
    _OIP + "RepositoryIndex": Rule(READ),
    _OIP + "RepositoryModelLoad": Rule(CONTROL, "model_name"),
    _OIP + "RepositoryModelUnload": Rule(CONTROL, "model_name"),
    # answered UNIMPLEMENTED today; they change server state (or read it), so they get the rule they would need
    _OIP + "SystemSharedMemoryStatus": Rule(READ),
    _OIP + "CudaSharedMemoryStatus": Rule(READ),
    _OIP + "SystemSharedMemoryRegister": Rule(CONTROL),
    _OIP + "SystemSharedMemoryUnregister": Rule(CONTROL),
    _OIP + "CudaSharedMemoryRegister": Rule(CONTROL),
    _OIP + "CudaSharedMemoryUnregister": Rule(CONTROL),
    _OIP + "TraceSetting": Rule(CONTROL),
    _OIP + "LogSettings": Rule(CONTROL),
    # open by default through open_methods; a config that drops them from there still gets a rule here
    _OIP + "ServerLive": Rule(READ),
    _OIP + "ServerReady": Rule(READ),
}
#: service prefix → the rule of each of its methods (health and reflection: when a config takes them out of
#: open_methods, callers need a role that reads)
SERVICE_RULES: dict[str, Rule] = {
    _ADMIN: Rule(CONTROL, "name"),
    "/grpc.health.v1.Health/": Rule(READ),
    "/grpc.reflection.v1alpha.ServerReflection/": Rule(READ),
    "/grpc.reflection.v1.ServerReflection/": Rule(READ),
}
OPEN_RULE = Rule(OPEN)


def rule_for(method: str, open_methods: tuple[str, ...]) -> Rule | None:
    """The rule for ``method`` (``/package.Service/Method``); None = no rule, the call is denied."""
    if any(fnmatchcase(method, pattern) for pattern in open_methods):
        return OPEN_RULE
    rule = RULES.get(method)
    if rule is not None:
        return rule
    service = method[: method.rfind("/") + 1]
    return SERVICE_RULES.get(service)


def model_of(rule: Rule, request: Any) -> str | None:
    """The model a request names ("" = none given); None when the rule is not about a model.

    Raises :class:`~server.security.wire_model.MalformedRequest` for raw bytes that are not protobuf."""
    field = rule.model_field
    if field is None:
        return None
    if isinstance(request, bytes):
        return wire_model_name(request)
    value = getattr(request, field, "")
    return value if isinstance(value, str) else ""
