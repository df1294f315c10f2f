"""Loading, swapping, unloading and relabelling models while traffic flows.

Swap order is always: load and warm new slots, publish the new routing table with one reference swap,
then drain the slots that left it (their in-flight requests and open streams finish, within
``drain_timeout_s``) and close them. A version that fails to load never replaces one that serves.
Changes to one model are serialised by a per-model lock; different models change independently.

Loads are tasks owned by the manager: a caller (LoadModel, polling, start-up) only waits for one, so a
caller that goes away does not cancel a load half-way and leave the model LOADING. A load asked for
while an identical one still waits its turn joins it. ``close()`` waits for running loads.

Nothing here grows with what clients send: per-model locks exist only while held or awaited, unknown
names are answered NOT_FOUND before any state is made, and retired slots are kept only while they
drain plus a short history.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Collection, Mapping

from server.core.echo import echo, listing
from server.core.errors import FailedPrecondition, InvalidArgument, NotFound, ServingError, Unavailable
from server.core.types import SlotState
from server.models import repository_poll
from server.models.config import ShadowSpec, traffic_weights_problem
from server.models.loader import LoadPolicy
from server.models.locks import ModelLocks
from server.models.registry import ModelEntry, Registry
from server.models.repository import ModelSource, Repository, RepositoryError
from server.models.routing_policy import check_shadow, only_routing_differs
from server.models.slot import DEFAULT_DRAIN_TIMEOUT_S, Slot

log = logging.getLogger("inferd.lifecycle")

#: closed slots kept in ``ModelManager.retired`` after their drain (draining ones are always listed)
RETIRED_HISTORY = 32


LoadKey = tuple[str, tuple[int, ...]]


class ModelManager:
    def __init__(
        self,
        repository: Repository,
        registry: Registry,
        device: str = "cpu",
        engine_defaults: Mapping[str, str] | None = None,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        allowed_engines: Collection[str] | None = None,
    ) -> None:
        self.repository = repository
        #: files under the repository root only; only these engines (None = all; --allowed-engines)
        self.load_policy = LoadPolicy.of(repository.root, allowed_engines)
        self.registry = registry
        self.device = device
        #: server-wide engine parameters (e.g. --trt-auto-build), under each model's own parameters
        self.engine_defaults: dict[str, str] = dict(engine_defaults or {})
        #: longest a retired slot drains before what remains on it is ended (retryable) and it closes
        self.drain_timeout_s = drain_timeout_s
        self._locks = ModelLocks()
        #: version loads that ended FAILED, per model name (from the repository, so a bounded set)
        self.load_failures: Counter[str] = Counter()
        #: every load task not yet finished, with what it loads (close() waits for them)
        self._loads: dict[asyncio.Task[ModelEntry], LoadKey] = {}
        #: load tasks still waiting for their model's lock, by what they load: an identical request joins
        self._queued: dict[LoadKey, asyncio.Task[ModelEntry]] = {}
        self._draining: dict[asyncio.Task[None], Slot] = {}
        self._closed_slots: deque[Slot] = deque(maxlen=RETIRED_HISTORY)
        #: per model, the fingerprint of its files at its last completed load or API unload; polling
        #: (repository_poll) reloads a model whose files no longer match (so a load that failed to finish is retried)
        self._seen: dict[str, str] = {}
        self._closing = False

    @property
    def retired(self) -> list[Slot]:
        """Slots retired by swaps and unloads: the last RETIRED_HISTORY closed ones, then all still draining."""
        return [*self._closed_slots, *self._draining.values()]

    @property
    def draining(self) -> int:
        """Retired slots still draining or closing."""
        return len(self._draining)

    async def load_all(self) -> None:
        """Start-up: load every model. Unlike a caller of load(), cancelling this (a signal during
        start-up) abandons the loads: nothing serves yet, and the server is stopping."""
        await asyncio.gather(*(self.start_load(name) for name in self.repository.model_names()))

    async def load(self, name: str, versions: list[int] | None = None) -> ModelEntry:
        """(Re)load a model and wait for it; cancelling the caller does not cancel the load."""
        return await asyncio.shield(self.start_load(name, versions))

    def start_load(self, name: str, versions: list[int] | None = None) -> asyncio.Task[ModelEntry]:
        """The task that (re)loads ``name`` (a queued identical one, or a new one); see the module docstring."""
        if self._closing:
            raise Unavailable("the server is shutting down; models are not loaded any more")
        try:
            directory = self.repository.model_dir(name)  # a bad name or a model that is not there fails now
        except RepositoryError as exc:
            raise InvalidArgument(str(exc)) from None
        if not directory.is_dir():
            raise NotFound(f"model {echo(name)} is not in the repository")
        key: LoadKey = (name, tuple(sorted(set(versions or ()))))
        task = self._queued.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_task(key), name=f"load {name}")
            self._queued[key] = task
            self._loads[task] = key
            task.add_done_callback(self._load_done)
        return task

    async def _load_task(self, key: LoadKey) -> ModelEntry:
        name, versions = key
        async with self._locks.hold(name):
            self._forget_queued(key)  # from here on a new request waits for the next load
            fingerprint = self.fingerprint(name)  # before reading: a change during the load is seen next poll
            try:
                source = self.repository.read_model(name)
            except RepositoryError as exc:
                raise InvalidArgument(str(exc)) from None
            if not source.directory.is_dir():
                raise NotFound(f"model {echo(name)} is not in the repository")
            entry = await self._load_locked(source, list(versions) or None)
            self._seen[name] = fingerprint  # only a load that completed: polling retries any other
            return entry

    def _forget_queued(self, key: LoadKey) -> None:
        task = asyncio.current_task()
        if self._queued.get(key) is task:
            del self._queued[key]

    def _load_done(self, task: asyncio.Task[ModelEntry]) -> None:
        key = self._loads.pop(task)
        if self._queued.get(key) is task:
            del self._queued[key]
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, ServingError):
            log.debug("%s: %s", task.get_name(), exc)
        elif exc is not None:
            log.error("%s failed", task.get_name(), exc_info=exc)

    async def _load_locked(self, source: ModelSource, versions: list[int] | None) -> ModelEntry:
        name = source.name
        current = self.registry.get(name)
        if source.spec is None:
            log.error("model %s cannot be read: %s", name, source.error)
            if current is not None and current.serving:
                entry = ModelEntry.of(
                    name,
                    current.spec,
                    current.slots,
                    labels=current.labels,
                    traffic=current.traffic,
                    shadow=current.shadow,
                    note=f"reload failed, older versions keep serving: {source.error}",
                )
            else:
                entry = ModelEntry.of(name, None, {}, error=source.error)
                self._retire(list(current.slots.values()) if current else [])
            await self.registry.publish(entry)
            return entry
        spec = source.spec
        if versions:
            absent = [v for v in versions if v not in source.versions]
            if absent:
                raise NotFound(f"model {echo(name)} has no version folder {listing(absent, 8)}")
            wanted = sorted(set(versions), reverse=True)
        else:
            wanted = source.versions_to_load()
        # only a change outside the routing policy (labels, traffic, shadow) reloads a loaded version
        routing_changed = current is None or current.spec != spec
        config_changed = current is None or not only_routing_differs(current.spec, spec)
        if routing_changed and not config_changed:
            log.info("model %s: only its routing policy changed in config.pbtxt; versions kept", name)
        keep: dict[int, Slot] = {}
        fresh: dict[int, Slot] = {}
        for version in wanted:
            old = current.slots.get(version) if current else None
            files = repository_poll.version_fingerprint(source.versions[version])
            if old is not None and old.ready and not config_changed and old.artifact_fingerprint == files:
                keep[version] = old
            else:
                fresh[version] = Slot(
                    spec,
                    version,
                    source.versions[version],
                    device=self.device,
                    engine_defaults=self.engine_defaults,
                    policy=self.load_policy,
                )
                fresh[version].artifact_fingerprint = files
        listed = current is None and bool(fresh)
        if listed:
            # a model seen for the first time is listed (LOADING, not serving) while it loads
            await self.registry.publish(ModelEntry.of(name, spec, fresh))
        await self._load_slots(name, fresh, listed)
        final = dict(keep)
        notes: list[str] = []
        discard: list[Slot] = []
        for version, slot in fresh.items():
            old = current.slots.get(version) if current else None
            if slot.ready or old is None or not old.ready:
                final[version] = slot
            else:
                final[version] = old
                notes.append(f"reload of version {version} failed, the loaded one keeps serving: {slot.reason}")
                discard.append(slot)
        if current is not None and not any(slot.ready for slot in final.values()):
            # nothing new came up: whatever served before keeps serving until a load succeeds
            for version, old in current.slots.items():
                if old.ready and version not in final:
                    final[version] = old
                    notes.append(f"version {version} keeps serving until a newer version loads")
        if current is not None and not routing_changed:  # what SetTraffic/SetShadow set stays
            labels, traffic, shadow = current.labels, current.traffic, current.shadow
        else:
            labels, traffic, shadow = spec.version_labels, spec.traffic, spec.shadow
        error = None if final else f"no version folder of model {name} matches the version policy"
        entry = ModelEntry.of(
            name, spec, final, error=error, labels=labels, traffic=traffic, shadow=shadow, note="; ".join(notes)
        )
        await self.registry.publish(entry)
        kept = set(map(id, final.values()))
        leaving = [s for s in (current.slots.values() if current else []) if id(s) not in kept]
        self._retire(leaving + discard)
        states = ", ".join(f"v{v}={s.state.value}" for v, s in sorted(final.items())) or error
        log.info("model %s: %s", name, states)
        return entry

    async def _load_slots(self, name: str, fresh: dict[int, Slot], listed: bool) -> None:
        """Load and warm ``fresh``: each ends READY or FAILED. Should the load itself be cancelled (only
        close() does that), none of them stays listed or LOADING, so polling or LoadModel can load the
        model again."""
        try:
            results = await asyncio.gather(*(slot.load() for slot in fresh.values()), return_exceptions=True)
            for slot, result in zip(fresh.values(), results, strict=True):
                if isinstance(result, BaseException) and not slot.ready:  # Slot.load should not raise
                    log.error("loading %r raised", slot, exc_info=result)
                    slot.state, slot.reason = SlotState.FAILED, f"load failed: {result!r}"
                if slot.state is SlotState.FAILED:
                    self.load_failures[name] += 1
        except asyncio.CancelledError:
            entry = self.registry.get(name)
            if listed and entry is not None and set(map(id, entry.slots.values())) <= set(map(id, fresh.values())):
                await self.registry.remove(name)
            self._retire(list(fresh.values()))
            log.warning("load of model %s was cancelled; polling or LoadModel will load it again", name)
            raise

    def _retire(self, slots: list[Slot], reason: str = "replaced or unloaded") -> None:
        """Drain and close slots that no longer route, in the background (bounded by drain_timeout_s)."""
        loop = asyncio.get_running_loop()
        for slot in slots:
            task = loop.create_task(slot.drain_and_close(reason, timeout=self.drain_timeout_s))
            self._draining[task] = slot
            task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        slot = self._draining.pop(task)
        self._closed_slots.append(slot)
        if not task.cancelled() and task.exception() is not None:
            log.error("closing %r failed", slot, exc_info=task.exception())

    async def wait_drained(self) -> None:
        while self._draining:
            await asyncio.gather(*list(self._draining), return_exceptions=True)

    def _known(self, name: str) -> None:
        """NOT_FOUND for a model that is not loaded, before any per-name state (a lock) is made for it."""
        self.registry.entry(name)

    async def unload(self, name: str, version: int = 0, *, sticky: bool = True) -> ModelEntry | None:
        """Drain and close one version or the whole model. ``sticky``: polling will not bring it back
        until LoadModel is called or the model's files change (an unload asked for through the API)."""
        self._known(name)
        async with self._locks.hold(name):
            current = self.registry.entry(name)
            if not version:
                await self.registry.remove(name)
                self._retire(list(current.slots.values()))
                if sticky:
                    self._seen[name] = self.fingerprint(name)
                else:
                    self._seen.pop(name, None)
                log.info("model %s unloaded", name)
                return None
            if version not in current.slots:
                have = listing(sorted(current.slots), 8)
                raise NotFound(f"model {echo(name)} version {version} not found (versions: {have})")
            slots = {v: s for v, s in current.slots.items() if v != version}
            entry = ModelEntry.of(
                name,
                current.spec,
                slots,
                labels=current.labels,
                traffic=current.traffic,
                shadow=current.shadow,
                note=current.note,
            )
            await self.registry.publish(entry)
            self._retire([current.slots[version]])
            log.info("model %s version %d unloaded", name, version)
            return entry

    async def set_traffic(
        self, name: str, labels: Mapping[str, int], traffic: tuple[tuple[str, int], ...]
    ) -> ModelEntry:
        self._known(name)
        async with self._locks.hold(name):
            current = self.registry.entry(name)
            for label, version in labels.items():
                slot = current.slots.get(version)
                if slot is None or not slot.ready:
                    state = "not loaded" if slot is None else slot.state.value
                    raise FailedPrecondition(
                        f"label {echo(label)} of model {echo(name)} points at version {version}, which is {state}"
                    )
            for label, _weight in traffic:
                if label not in labels:
                    raise InvalidArgument(
                        f"traffic label {echo(label)} of model {echo(name)} is not among the labels given"
                    )
            problem = traffic_weights_problem(traffic)
            if problem is not None:
                raise InvalidArgument(f"model {echo(name)}: {problem}")
            entry = current.with_routing(labels, tuple((label, w) for label, w in traffic if w > 0))
            await self.registry.publish(entry)
            log.info("model %s routing: labels %s traffic %s", name, dict(labels), list(traffic))
            return entry

    async def set_shadow(self, name: str, shadow: ShadowSpec | None) -> ModelEntry:
        """Mirror to another version (or stop, with None): a new entry over the same slots and statistics."""
        self._known(name)
        async with self._locks.hold(name):
            current = self.registry.entry(name)
            if shadow is not None:
                check_shadow(current, shadow)
            entry = current.with_shadow(shadow)
            await self.registry.publish(entry)
            log.info("model %s shadow: %s", name, shadow or "off")
            return entry

    def fingerprint(self, name: str) -> str:
        """What polling compares: config text and, per version folder, its files' names, sizes and mtimes."""
        return repository_poll.model_fingerprint(self.repository.root / name)

    async def poll_once(self) -> list[str]:
        """Reconcile with the repository; returns the models that changed (see repository_poll)."""
        return await repository_poll.poll_once(self)

    async def poll_forever(self, interval: float) -> None:
        await repository_poll.poll_forever(self, interval)

    async def close(self) -> None:
        """Refuse new loads, let running ones finish (cancelled after drain_timeout_s), then drain and
        close every slot."""
        self._closing = True
        loads = list(self._loads)
        if loads:
            _done, pending = await asyncio.wait(loads, timeout=self.drain_timeout_s)
            for task in pending:
                log.warning("%s still running at shutdown; cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*loads, return_exceptions=True)
        for entry in self.registry.models():
            await self.registry.remove(entry.name)
            self._retire(list(entry.slots.values()), "server shutting down")
        await self.wait_drained()
