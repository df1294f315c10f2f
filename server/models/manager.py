"""Loading, swapping, unloading and relabelling models while traffic flows.

Swap order is always: load and warm new slots, publish the new routing table with one reference swap,
then drain the slots that left it (their in-flight requests and open streams finish) and close them.
A version that fails to load never replaces one that serves. Changes to one model are serialised by
a per-model lock; different models change independently.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from server.models.registry import ModelEntry, Registry
from server.models.repository import ModelSource, Repository, RepositoryError
from server.models.slot import Slot

log = logging.getLogger("inferd.lifecycle")


def version_fingerprint(version_dir: Path) -> str:
    """A version folder's files (names, sizes, mtimes): a READY version is reloaded when this changes."""
    digest = hashlib.sha256()
    try:
        for item in sorted(version_dir.rglob("*")):
            if item.is_file():
                stat = item.stat()
                digest.update(f"{item.relative_to(version_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    except OSError as exc:
        digest.update(str(exc).encode())
    return digest.hexdigest()


class ModelManager:
    def __init__(
        self,
        repository: Repository,
        registry: Registry,
        device: str = "cpu",
        engine_defaults: Mapping[str, str] | None = None,
    ) -> None:
        self.repository = repository
        self.registry = registry
        self.device = device
        #: server-wide engine parameters (e.g. --trt-auto-build), under each model's own parameters
        self.engine_defaults: dict[str, str] = dict(engine_defaults or {})
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._draining: set[asyncio.Task[None]] = set()
        self._seen: dict[str, str] = {}
        #: models unloaded through the API: polling leaves them out until LoadModel or their files change
        self._unloaded: set[str] = set()
        #: every slot retired by a swap, newest last (tests and `inferd models` history)
        self.retired: list[Slot] = []

    async def load_all(self) -> None:
        names = self.repository.model_names()
        await asyncio.gather(*(self.load(name) for name in names))

    async def load(self, name: str, versions: list[int] | None = None, *, fingerprint: str | None = None) -> ModelEntry:
        """(Re)load a model from the repository; see the module docstring for the swap order."""
        try:
            source = self.repository.read_model(name)
        except RepositoryError as exc:
            raise InvalidArgument(str(exc)) from None
        if not source.directory.is_dir():
            raise NotFound(f"model '{name}' is not in the repository {self.repository.root}")
        async with self._locks[name]:
            self._unloaded.discard(name)
            self._seen[name] = fingerprint or self.fingerprint(name)  # polling compares against this
            return await self._load_locked(source, versions)

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
                    note=f"reload failed, older versions keep serving: {source.error}",
                )
            else:
                entry = ModelEntry.of(name, None, {}, error=source.error)
                await self._retire(list(current.slots.values()) if current else [])
            await self.registry.publish(entry)
            return entry
        spec = source.spec
        if versions:
            absent = [v for v in versions if v not in source.versions]
            if absent:
                raise NotFound(f"model '{name}' has no version folder {', '.join(map(str, absent))}")
            wanted = sorted(set(versions), reverse=True)
        else:
            wanted = source.versions_to_load()
        config_changed = current is None or current.spec != spec
        keep: dict[int, Slot] = {}
        fresh: dict[int, Slot] = {}
        for version in wanted:
            old = current.slots.get(version) if current else None
            files = version_fingerprint(source.versions[version])
            if old is not None and old.ready and not config_changed and old.artifact_fingerprint == files:
                keep[version] = old
            else:
                fresh[version] = Slot(
                    spec, version, source.versions[version], device=self.device, engine_defaults=self.engine_defaults
                )
                fresh[version].artifact_fingerprint = files
        if current is None and fresh:
            # a model seen for the first time is listed (LOADING, not serving) while it loads
            await self.registry.publish(ModelEntry.of(name, spec, fresh))
        await asyncio.gather(*(slot.load() for slot in fresh.values()))
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
        if current is not None and not config_changed:
            labels, traffic = current.labels, current.traffic
        else:
            labels, traffic = spec.version_labels, spec.traffic
        error = None if final else f"no version folder in {source.directory} matches the version policy"
        entry = ModelEntry.of(name, spec, final, error=error, labels=labels, traffic=traffic, note="; ".join(notes))
        await self.registry.publish(entry)
        kept = set(map(id, final.values()))
        leaving = [s for s in (current.slots.values() if current else []) if id(s) not in kept]
        await self._retire(leaving + discard)
        states = ", ".join(f"v{v}={s.state.value}" for v, s in sorted(final.items())) or error
        log.info("model %s: %s", name, states)
        return entry

    async def _retire(self, slots: list[Slot]) -> None:
        """Drain and close slots that no longer route, in the background."""
        for slot in slots:
            self.retired.append(slot)
            task = asyncio.get_running_loop().create_task(slot.drain_and_close("replaced or unloaded"))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    async def wait_drained(self) -> None:
        while self._draining:
            await asyncio.gather(*list(self._draining), return_exceptions=True)

    async def unload(self, name: str, version: int = 0, *, sticky: bool = True) -> ModelEntry | None:
        """Drain and close one version or the whole model. ``sticky``: polling will not bring it back
        until LoadModel is called or the model's files change (an unload asked for through the API)."""
        async with self._locks[name]:
            current = self.registry.entry(name)
            if not version:
                await self.registry.remove(name)
                await self._retire(list(current.slots.values()))
                if sticky:
                    self._unloaded.add(name)
                    self._seen[name] = self.fingerprint(name)
                else:
                    self._seen.pop(name, None)
                log.info("model %s unloaded", name)
                return None
            if version not in current.slots:
                have = ", ".join(str(v) for v in sorted(current.slots)) or "none"
                raise NotFound(f"model '{name}' version {version} not found (versions: {have})")
            slots = {v: s for v, s in current.slots.items() if v != version}
            entry = ModelEntry.of(
                name, current.spec, slots, labels=current.labels, traffic=current.traffic, note=current.note
            )
            await self.registry.publish(entry)
            await self._retire([current.slots[version]])
            log.info("model %s version %d unloaded", name, version)
            return entry

    async def set_traffic(
        self, name: str, labels: Mapping[str, int], traffic: tuple[tuple[str, int], ...]
    ) -> ModelEntry:
        async with self._locks[name]:
            current = self.registry.entry(name)
            for label, version in labels.items():
                slot = current.slots.get(version)
                if slot is None or not slot.ready:
                    state = "not loaded" if slot is None else slot.state.value
                    raise FailedPrecondition(
                        f"label '{label}' of model '{name}' points at version {version}, which is {state}"
                    )
            for label, weight in traffic:
                if label not in labels:
                    raise InvalidArgument(f"traffic label '{label}' of model '{name}' is not among the labels given")
                if weight < 0:
                    raise InvalidArgument(f"traffic weight of label '{label}' is negative")
            entry = current.with_routing(labels, tuple((label, w) for label, w in traffic if w > 0))
            await self.registry.publish(entry)
            log.info("model %s routing: labels %s traffic %s", name, dict(labels), list(traffic))
            return entry

    def fingerprint(self, name: str) -> str:
        """What polling compares: config text and, per version folder, its files' names, sizes and mtimes."""
        digest = hashlib.sha256()
        directory = self.repository.root / name
        try:
            digest.update((directory / "config.pbtxt").read_bytes())
            for entry in sorted(directory.iterdir()):
                if entry.is_dir():
                    digest.update(f"{entry.name}:{version_fingerprint(entry)}".encode())
        except OSError as exc:
            digest.update(str(exc).encode())
        return digest.hexdigest()

    async def poll_once(self) -> list[str]:
        """Reconcile with the repository; returns the models that changed."""
        on_disk = set(self.repository.model_names())
        changed: list[str] = []
        for name in sorted(on_disk):
            fingerprint = self.fingerprint(name)
            if self._seen.get(name) != fingerprint:
                changed.append(name)
                await self.load(name, fingerprint=fingerprint)
        for name in sorted(set(self._seen) - on_disk):
            changed.append(name)
            if self.registry.get(name) is not None:
                await self.unload(name, sticky=False)
            self._seen.pop(name, None)
            self._unloaded.discard(name)
        return changed

    async def poll_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except Exception:
                log.exception("repository poll failed; will retry")

    async def close(self) -> None:
        for entry in self.registry.models():
            await self.registry.remove(entry.name)
            await self._retire(list(entry.slots.values()))
        await self.wait_drained()
