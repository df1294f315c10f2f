"""Repository polling: fingerprints of a model's files, and the reconcile loop that acts on them.

A fingerprint covers names, sizes and mtimes (never contents), so a poll stays cheap however large the
weights. The manager records a model's fingerprint when a load completes or the API unloads it; a poll
reloads each model whose files no longer match and unloads each whose folder went away. The loads and
unloads themselves are the manager's (its tasks and per-model locks); this module only decides which.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from server.core.errors import ServingError

if TYPE_CHECKING:
    from server.models.manager import ModelManager

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


def model_fingerprint(directory: Path) -> str:
    """A model folder's config text and, per version folder, its ``version_fingerprint``."""
    digest = hashlib.sha256()
    try:
        config = directory / "config.pbtxt"
        # no config.pbtxt: a derived config, which the version folders' files decide
        digest.update(config.read_bytes() if config.is_file() else b"(derived)")
        for entry in sorted(directory.iterdir()):
            if entry.is_dir():
                digest.update(f"{entry.name}:{version_fingerprint(entry)}".encode())
    except OSError as exc:
        digest.update(str(exc).encode())
    return digest.hexdigest()


async def poll_once(manager: ModelManager) -> list[str]:
    """Reconcile ``manager`` with its repository; returns the models that changed."""
    on_disk = set(manager.repository.model_names())
    changed: list[str] = []
    loading = {name for name, _versions in manager._loads.values()}
    for name in sorted(on_disk - loading):  # a model being loaded is looked at when its load ends
        if manager._seen.get(name) != manager.fingerprint(name):
            changed.append(name)
            try:
                await manager.load(name)
            except ServingError as exc:
                log.warning("repository poll: model %s: %s", name, exc)
    for name in sorted(set(manager._seen) - on_disk - loading):
        changed.append(name)
        if manager.registry.get(name) is not None:
            await manager.unload(name, sticky=False)
        manager._seen.pop(name, None)
    return changed


async def poll_forever(manager: ModelManager, interval: float) -> None:
    """Call ``manager.poll_once`` every ``interval`` seconds; a failed poll is logged and retried."""
    while True:
        await asyncio.sleep(interval)
        try:
            await manager.poll_once()
        except Exception:
            log.exception("repository poll failed; will retry")
