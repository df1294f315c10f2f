"""OIP repository control: RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload.

The same ModelManager calls as inferd.v1.ModelService (load before traffic moves, drain on unload), so the
two protocols cannot disagree about what a load does. Served where ModelService is (service.py: the main
port, or only the admin port with --admin-port).
"""

from __future__ import annotations

from typing import Any

from inferd.oip.v2 import grpc_service_pb2 as pb
from server.core.echo import echo
from server.core.errors import FailedPrecondition, InvalidArgument
from server.core.types import SlotState
from server.models.manager import ModelManager
from server.models.registry import ModelEntry
from server.models.repository import RepositoryError

#: inferd's version states in Triton's index vocabulary
STATES = {
    SlotState.LOADING: "LOADING",
    SlotState.WARMING: "LOADING",
    SlotState.READY: "READY",
    SlotState.DRAINING: "UNLOADING",
    SlotState.UNLOADED: "UNAVAILABLE",
    SlotState.FAILED: "UNAVAILABLE",
}
#: Triton's unload parameter: inferd has no ensembles, so no model depends on another
_UNLOAD_PARAMETERS = ("unload_dependents",)


def _check_parameters(parameters: Any, allowed: tuple[str, ...], rpc: str) -> None:
    for key in sorted(parameters):
        if key not in allowed:
            why = (
                "inferd loads the config.pbtxt and files of the repository folder; put the model there"
                if key == "config" or key.startswith("file:")
                else f"{rpc} takes {', '.join(allowed) or 'no parameters'}"
            )
            raise InvalidArgument(f"{rpc} parameter {echo(key)} is not supported: {why}")


def load_problem(entry: ModelEntry) -> str | None:
    """Why a finished load did not leave the model serving what was asked (as `inferd load` reports it)."""
    failed = [s for _, s in sorted(entry.slots.items()) if s.state is SlotState.FAILED]
    if failed:
        return "; ".join(f"model {echo(entry.name)} version {s.version} is FAILED: {s.reason}" for s in failed)
    if entry.error:
        return f"model {echo(entry.name)} is FAILED: {entry.error}"
    if entry.note:
        return f"model {echo(entry.name)} did not reload: {entry.note}"
    return None


class OipRepository:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    async def index(self, request: Any) -> Any:
        """Every model folder (and every model still loaded), one row per loaded version; a model with none
        loaded is one row with an empty version, UNAVAILABLE, and why. ``ready`` keeps READY rows only."""
        manager = self._manager
        repository = manager.repository
        response = pb.RepositoryIndexResponse()
        names = sorted(set(repository.model_names()) | {e.name for e in manager.registry.models()})
        for name in names:
            entry = manager.registry.get(name)
            if entry is not None and entry.slots:
                for version, slot in sorted(entry.slots.items()):
                    state = STATES[slot.state]
                    if not request.ready or state == "READY":
                        response.models.add(name=name, version=str(version), state=state, reason=slot.reason)
                continue
            if request.ready:
                continue
            response.models.add(name=name, state="UNAVAILABLE", reason=self._why_unavailable(name, entry))
        return response

    def _why_unavailable(self, name: str, entry: ModelEntry | None) -> str:
        if entry is not None and entry.error:
            return entry.error
        try:
            source = self._manager.repository.read_model(name)
        except RepositoryError as exc:
            return str(exc)
        return source.error or "not loaded (RepositoryModelLoad loads it)"

    async def load(self, request: Any) -> Any:
        """Load (or reload) the model and wait for it; a version that fails is FAILED_PRECONDITION with why."""
        if not request.model_name:
            raise InvalidArgument("model_name is empty")
        _check_parameters(request.parameters, (), "RepositoryModelLoad")
        entry = await self._manager.load(request.model_name)
        problem = load_problem(entry)
        if problem is not None:
            raise FailedPrecondition(problem)
        return pb.RepositoryModelLoadResponse()

    async def unload(self, request: Any) -> Any:
        """Take the model out of routing at once; its versions drain and close in the background."""
        if not request.model_name:
            raise InvalidArgument("model_name is empty")
        _check_parameters(request.parameters, _UNLOAD_PARAMETERS, "RepositoryModelUnload")
        await self._manager.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()
