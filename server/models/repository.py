"""The model repository on disk: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/<version>/model.<ext>``.

Reads only, and never follows a path out of its root: every path is resolved (symlinks included) and
must lie under the resolved root. A model folder or config that links out is recorded with that
reason; a version folder that links out, or any other folder that is skipped, is logged with its
reason. Messages name paths relative to the root, because clients read them (the log keeps absolute
paths).

A folder without config.pbtxt is still a model when a version folder holds a ``model.onnx``: the config
is derived from the graph (derived_config.py). Every other folder is skipped with a reason and a hint,
logged once and listed by ``skipped()`` (RepositoryIndex shows them).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from engines.base import ARTIFACT_ORDER, outside_reason
from server.core.echo import echo
from server.models.config import CONFIG_FILE, ConfigError, ModelSpec, is_model_name, load_config, spec_from_proto
from server.models.derived_config import ONNX_FILE, derive_config, summary

log = logging.getLogger("inferd.repository")

_VERSION = re.compile(r"[1-9][0-9]{0,17}")
#: distinct "skipped" log lines remembered so that polling does not repeat them
_REPORTED_LIMIT = 4096


class RepositoryError(Exception):
    """A repository path that cannot be used."""


class OutsideRepository(RepositoryError):
    """A path that resolves outside the repository root (a symlink out, or ``..``)."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What the repository holds for one model: its spec (or why it has none) and version folders."""

    name: str
    directory: Path
    spec: ModelSpec | None
    error: str | None = None
    versions: dict[int, Path] = field(default_factory=dict)

    def versions_to_load(self) -> list[int]:
        if self.spec is None:
            return []
        return self.spec.version_policy.select(list(self.versions))


@dataclass(frozen=True, slots=True)
class SkippedFolder:
    """A folder of the root that is not a model: its name (quoted and escaped unless a model name) and why."""

    folder: str
    reason: str


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a model folder, with what to do about it; None when it is one."""
    name = folder.name
    if not is_model_name(name):
        return "not a model name (letters, digits, '_', '.', '-'; at most 128): rename the folder"
    if (folder / CONFIG_FILE).is_file():
        return None
    try:
        versions = [e for e in sorted(folder.iterdir()) if e.is_dir() and _VERSION.fullmatch(e.name)]
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if any((v / ONNX_FILE).is_file() for v in versions):
        return None
    for version in versions:
        artifact = next((a for a in ARTIFACT_ORDER if (version / a).is_file()), None)
        if artifact is not None:
            return (
                f"no {CONFIG_FILE}, and {name}/{version.name}/{artifact} does not describe its own signature "
                f"(only a model.onnx does): write {name}/{CONFIG_FILE} (docs/config.md#derived-configuration)"
            )
    loose = next((a for a in ARTIFACT_ORDER if (folder / a).is_file()), None)
    if loose is not None:
        return f"{loose} is not in a version folder: move it to {name}/1/{loose}"
    return f"no {CONFIG_FILE} and no version folder with a model (e.g. {name}/1/{ONNX_FILE})"


def confine(path: Path, root: Path) -> Path:
    """``path`` resolved (symlinks followed); OutsideRepository unless it lies under ``root`` (resolved)."""
    reason = outside_reason(path, root)
    if reason is not None:
        raise OutsideRepository(reason)
    return path.resolve()


def relative(path: Path, root: Path) -> str:
    """``path`` as clients see it: relative to ``root`` when under it (unresolved), else its name."""
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return f"…/{path.name}"


class Repository:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise RepositoryError(f"model repository '{root}' is not a directory")
        self.root = root.resolve()
        self._reported: set[str] = set()

    def _inside(self, path: Path) -> Path:
        return confine(path, self.root)

    def display(self, path: Path) -> str:
        """A path as a client may see it (relative to the root)."""
        return relative(path, self.root)

    def _skip(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Log why a folder is skipped, once per distinct reason (polling reads the folder again and again)."""
        if key in self._reported:
            return
        if len(self._reported) >= _REPORTED_LIMIT:
            self._reported.clear()
        self._reported.add(key)
        log.log(level, message, *args)

    def model_names(self) -> list[str]:
        """The model folders: a config.pbtxt, or a version folder with a ``model.onnx`` to derive one from."""
        return [name for name, problem in self._scan() if problem is None]

    def skipped(self) -> list[SkippedFolder]:
        """The folders that are not models, each with why and how to fix it (RepositoryIndex lists them)."""
        return [
            SkippedFolder(name if is_model_name(name) else echo(name), problem)
            for name, problem in self._scan()
            if problem is not None
        ]

    def _scan(self) -> list[tuple[str, str | None]]:
        """Every folder of the root (hidden ones aside) and why it is not a model (None: it is one)."""
        found: list[tuple[str, str | None]] = []
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            problem = folder_problem(entry)
            if problem is not None:
                self._skip(f"folder:{entry.name}:{problem}", "repository: folder %r skipped: %s", entry.name, problem)
            found.append((entry.name, problem))
        return found

    def model_dir(self, name: str) -> Path:
        """Where model ``name`` lives (it may not exist); a name that is not a model name is refused."""
        if not is_model_name(name):
            raise RepositoryError(f"{echo(name)} is not a valid model name")
        return self.root / name

    def read_model(self, name: str) -> ModelSource:
        """Read one model's config and version folders; a bad config is reported, not raised."""
        directory = self.model_dir(name)
        try:
            directory = self._inside(directory)
            config_path = self._inside(directory / CONFIG_FILE)
        except RepositoryError as exc:
            log.warning("repository: model %s refused: %s (%s)", name, exc, directory)
            return ModelSource(name, directory, None, str(exc))
        versions = self._version_folders(name, directory)
        if not config_path.is_file():
            return self._derived(name, directory, versions)
        try:
            spec = load_config(config_path, model_name=name, display=self.display(config_path))
        except ConfigError as exc:
            return ModelSource(name, directory, None, str(exc), versions)
        return ModelSource(name, directory, spec, None, versions)

    def _derived(self, name: str, directory: Path, versions: dict[int, Path]) -> ModelSource:
        """No config.pbtxt: derive one from the highest version's ``model.onnx`` (logged once, at INFO)."""
        missing = f"{self.display(directory / CONFIG_FILE)}: not found"
        onnx = next((v for v in sorted(versions, reverse=True) if (versions[v] / ONNX_FILE).is_file()), None)
        if onnx is None:
            problem = folder_problem(directory)
            return ModelSource(name, directory, None, f"{missing} ({problem})" if problem else missing, versions)
        try:
            path = self.artifact(versions[onnx], ONNX_FILE)
            display = self.display(versions[onnx] / ONNX_FILE)
            spec = spec_from_proto(derive_config(name, path, display), display, model_name=name)
        except (RepositoryError, ConfigError) as exc:
            return ModelSource(name, directory, None, f"{missing} and none can be derived: {exc}", versions)
        self._skip(
            f"derived:{path}:{spec.proto}",
            "model %s: no %s; derived from %s: %s (`inferd config %s` prints it to keep)",
            name,
            CONFIG_FILE,
            display,
            summary(spec.proto),
            name,
            level=logging.INFO,
        )
        return ModelSource(name, directory, spec, None, versions)

    def _version_folders(self, name: str, directory: Path) -> dict[int, Path]:
        """The model's version folders; every other folder, and one that links out, is logged and skipped."""
        versions: dict[int, Path] = {}
        for entry in sorted(directory.iterdir()):
            if not entry.is_dir():
                continue
            if not _VERSION.fullmatch(entry.name):
                self._skip(
                    f"version:{entry}",
                    "model %s: folder %r skipped: not a version number (1, 2, ...)",
                    name,
                    entry.name,
                    level=logging.INFO,
                )
                continue
            try:
                versions[int(entry.name)] = self._inside(entry)
            except RepositoryError as exc:
                self._skip(
                    f"outside:{entry}->{os.path.realpath(entry)}",
                    "model %s: version folder %s skipped: %s (it resolves to %s)",
                    name,
                    entry.name,
                    exc,
                    os.path.realpath(entry),
                )
        return versions

    def artifact(self, version_dir: Path, filename: str) -> Path:
        """The artefact path inside a version folder, refusing anything that escapes the root."""
        return self._inside(version_dir / filename)
