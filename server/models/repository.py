"""The model repository on disk: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/<version>/model.<ext>``.

Reads only; never follows a path out of its root (symlinks that escape are refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from server.models.config import CONFIG_FILE, ConfigError, ModelSpec, load_config

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")


class RepositoryError(Exception):
    """A repository path that cannot be used."""


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


class Repository:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise RepositoryError(f"model repository '{root}' is not a directory")
        self.root = root.resolve()

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise RepositoryError(f"'{path}' resolves outside the repository root {self.root}")
        return resolved

    def model_names(self) -> list[str]:
        names = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and (entry / CONFIG_FILE).is_file() and _MODEL_NAME.match(entry.name):
                names.append(entry.name)
        return names

    def model_dir(self, name: str) -> Path:
        """Where model ``name`` lives (it may not exist); a name that is not a model name is refused."""
        if not _MODEL_NAME.match(name):
            raise RepositoryError(f"'{name[:200]}' is not a valid model name")
        return self.root / name

    def read_model(self, name: str) -> ModelSource:
        """Read one model's config and version folders; a bad config is reported, not raised."""
        directory = self.model_dir(name)
        try:
            directory = self._inside(directory)
            config_path = self._inside(directory / CONFIG_FILE)
        except RepositoryError as exc:
            return ModelSource(name, directory, None, str(exc))
        if not config_path.is_file():
            return ModelSource(name, directory, None, f"{directory / CONFIG_FILE}: not found")
        versions: dict[int, Path] = {}
        for entry in directory.iterdir():
            if entry.is_dir() and _VERSION.match(entry.name):
                try:
                    versions[int(entry.name)] = self._inside(entry)
                except RepositoryError:
                    continue  # a version folder that links out of the root is ignored
        try:
            spec = load_config(config_path, model_name=name)
        except ConfigError as exc:
            return ModelSource(name, directory, None, str(exc), versions)
        return ModelSource(name, directory, spec, None, versions)

    def artifact(self, version_dir: Path, filename: str) -> Path:
        """The artefact path inside a version folder, refusing anything that escapes the root."""
        return self._inside(version_dir / filename)
