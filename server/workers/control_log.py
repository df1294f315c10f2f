"""Every model-control call that succeeded on every worker, in order: replayed to a restarted worker so
it ends with the same models, labels, traffic and shadow as the others."""

from __future__ import annotations

from dataclasses import dataclass

#: control methods that change state (replayed); RepositoryIndex only reads
MUTATING_METHODS = frozenset(
    {
        "/inferd.v1.ModelService/LoadModel",
        "/inferd.v1.ModelService/UnloadModel",
        "/inferd.v1.ModelService/SetTraffic",
        "/inferd.v1.ModelService/SetShadow",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
    }
)
#: every method the supervisor fans out to all workers
CONTROL_METHODS = MUTATING_METHODS | {
    "/inferd.v1.ModelService/RepositoryIndex",
    "/inference.GRPCInferenceService/RepositoryIndex",
}
STATISTICS_METHOD = "/inferd.v1.InferenceService/ModelStatistics"
OIP_STATISTICS_METHOD = "/inference.GRPCInferenceService/ModelStatistics"
#: answered by the supervisor with every worker's statistics summed (server/workers/stats_fanout.py)
STATISTICS_METHODS = frozenset({STATISTICS_METHOD, OIP_STATISTICS_METHOD})


@dataclass(frozen=True, slots=True)
class ControlCall:
    method: str
    request: bytes


class ControlLog:
    """Append-only; replay order is call order. Unbounded on purpose: control calls are rare and small."""

    def __init__(self) -> None:
        self._calls: list[ControlCall] = []

    def record(self, method: str, request: bytes) -> None:
        """Keep a call that succeeded everywhere (read-only calls are not kept)."""
        if method in MUTATING_METHODS:
            self._calls.append(ControlCall(method, request))

    def calls(self) -> tuple[ControlCall, ...]:
        return tuple(self._calls)

    def __len__(self) -> int:
        return len(self._calls)
