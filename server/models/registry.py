"""Model name → loaded versions, labels and traffic policy; decides which slot serves a request.

Each model's routing table is an immutable ``ModelEntry`` replaced by one reference swap, so the hot
path takes no lock and never sees a half-updated model.

Errors echo a client's names and labels only as short escaped prefixes and list at most a few of the
server's names (server/core/echo.py): a 20 kB model name is answered NOT_FOUND, not with a message
too large for the trailers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import EllipsisType

from server.core.echo import echo, listing
from server.core.errors import NotFound, Unavailable
from server.models.config import ModelSpec, ShadowSpec
from server.models.routing import TrafficSplit, should_mirror
from server.models.slot import Slot

HealthListener = Callable[[str, bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model's routing table at one instant."""

    name: str
    spec: ModelSpec | None
    slots: Mapping[int, Slot] = field(default_factory=dict)
    #: Why the model as a whole cannot be served (e.g. a bad config.pbtxt).
    error: str | None = None
    #: Label → version (from the config, or replaced by SetTraffic).
    labels: Mapping[str, int] = field(default_factory=dict)
    #: (label, weight) pairs for unpinned requests.
    traffic: tuple[tuple[str, int], ...] = ()
    shadow: ShadowSpec | None = None
    #: The last load that failed while older versions kept serving.
    note: str = ""
    split: TrafficSplit | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        name: str,
        spec: ModelSpec | None,
        slots: Mapping[int, Slot],
        *,
        error: str | None = None,
        labels: Mapping[str, int] | None = None,
        traffic: tuple[tuple[str, int], ...] | None = None,
        shadow: ShadowSpec | EllipsisType | None = ...,
        note: str = "",
    ) -> ModelEntry:
        """``labels``, ``traffic`` and ``shadow`` default to the spec's (``shadow=None`` means none)."""
        labels = dict(spec.version_labels if spec and labels is None else labels or {})
        traffic = (spec.traffic if spec else ()) if traffic is None else traffic
        return cls(
            name=name,
            spec=spec,
            slots=dict(slots),
            error=error,
            labels=labels,
            traffic=traffic,
            shadow=(spec.shadow if spec else None) if isinstance(shadow, EllipsisType) else shadow,
            note=note,
            split=TrafficSplit.of(traffic),
        )

    def with_routing(self, labels: Mapping[str, int], traffic: tuple[tuple[str, int], ...]) -> ModelEntry:
        return replace(self, labels=dict(labels), traffic=traffic, split=TrafficSplit.of(traffic))

    def with_shadow(self, shadow: ShadowSpec | None) -> ModelEntry:
        return replace(self, shadow=shadow)

    def shadow_version(self, shadow: ShadowSpec) -> int:
        """The version a shadow policy mirrors to now (0: its label points nowhere)."""
        return self.labels.get(shadow.label, 0) if shadow.label else shadow.version

    def unpinned_versions(self) -> set[int]:
        """The versions a request that names neither version nor label can reach (as ``Registry.route``)."""
        ready = self.ready_versions()
        if self.split is not None:
            split = {self.labels.get(label, 0) for label in self.split.labels}
            if split & set(ready):
                return split & set(ready)
        stable = self.labels.get("stable", 0)
        return {stable} if stable in ready else set(ready[:1])

    def ready_versions(self) -> list[int]:
        return sorted((v for v, s in self.slots.items() if s.ready), reverse=True)

    @property
    def serving(self) -> bool:
        return any(s.ready for s in self.slots.values())

    def labels_of(self, version: int) -> list[str]:
        return sorted(label for label, v in self.labels.items() if v == version)


class Registry:
    def __init__(self, on_health_change: HealthListener | None = None) -> None:
        self._models: dict[str, ModelEntry] = {}
        self._on_health_change = on_health_change
        #: the serving state last reported to health, per model (slot states change under an entry)
        self._reported: dict[str, bool] = {}

    def models(self) -> list[ModelEntry]:
        return [self._models[name] for name in sorted(self._models)]

    def get(self, name: str) -> ModelEntry | None:
        return self._models.get(name)

    async def publish(self, entry: ModelEntry) -> None:
        """Swap in a model's new routing table and tell health when its serving state changed."""
        self._models[entry.name] = entry
        serving = entry.serving
        if self._reported.get(entry.name) != serving:
            self._reported[entry.name] = serving
            if self._on_health_change is not None:
                await self._on_health_change(entry.name, serving)

    async def remove(self, name: str) -> ModelEntry | None:
        entry = self._models.pop(name, None)
        self._reported.pop(name, None)
        if entry is not None and self._on_health_change is not None:
            await self._on_health_change(name, False)
        return entry

    def has_split(self, name: str) -> bool:
        entry = self._models.get(name)
        return entry is not None and entry.split is not None

    def entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise NotFound(f"model {echo(name)} not found (models: {listing(sorted(self._models))})")
        return entry

    def route(
        self,
        name: str,
        version: int | None = None,
        label: str | None = None,
        routing_key: str = "",
        *,
        split: bool = True,
    ) -> Slot:
        """The READY slot for a request: an explicit version, else a label, else traffic split or default.

        ``split=False`` skips the traffic split (metadata describes the default version, not a random one).
        """
        entry = self.entry(name)
        if entry.error is not None:
            raise Unavailable(f"model {echo(name)} is not available: {entry.error}")
        if version:
            return _version_slot(entry, version)
        labels = entry.labels
        if label:
            if label not in labels:
                raise NotFound(
                    f"model {echo(name)} has no version label {echo(label)} (labels: {listing(sorted(labels))})"
                )
            return _version_slot(entry, labels[label], label)
        if split and entry.split is not None:
            slot = entry.slots.get(labels.get(entry.split.pick(routing_key), 0))
            if slot is not None and slot.ready:
                return slot
        stable = labels.get("stable")
        if stable is not None:
            slot = entry.slots.get(stable)
            if slot is not None and slot.ready:
                return slot
        slots = entry.slots
        if len(slots) == 1:  # the common case, without sorting the versions per request
            for only in slots.values():
                if only.ready:
                    return only
        ready = entry.ready_versions()
        if not ready:
            states = "; ".join(
                f"version {v}: {s.state.value}{' (' + s.reason + ')' if s.reason else ''}"
                for v, s in sorted(entry.slots.items())
            )
            raise Unavailable(f"model {echo(name)} has no READY version ({states or 'no versions'})")
        return entry.slots[ready[0]]

    def shadow_for(self, name: str, primary: Slot) -> Slot | None:
        """The slot to mirror this request to, if the model has a shadow policy and the dice say so."""
        entry = self._models.get(name)
        if entry is None or entry.shadow is None:
            return None
        shadow = entry.shadow
        slot = entry.slots.get(entry.shadow_version(shadow))
        if slot is None or slot is primary or not slot.ready or not should_mirror(shadow.fraction):
            return None
        return slot


def _version_slot(entry: ModelEntry, version: int, label: str | None = None) -> Slot:
    slot = entry.slots.get(version)
    if slot is None:
        have = listing(sorted(entry.slots), 8)
        via = f" (label {echo(label)} points at it)" if label else ""
        raise NotFound(f"model {echo(entry.name)} version {version}{via} not found (versions: {have})")
    if not slot.ready:
        detail = f": {slot.reason}" if slot.reason else ""
        via = f" (label {echo(label)})" if label else ""
        raise Unavailable(f"model {echo(entry.name)} version {version}{via} is {slot.state.value}{detail}")
    return slot
