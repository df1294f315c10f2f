"""Which plan file a TensorRT engine loads: the version's own ``model.plan``, or one built into the cache.

- A ``model.plan`` whose metadata matches this GPU and TensorRT release is used as it is.
- One that names another GPU, compute capability or TensorRT release is refused with the reason, unless
  auto-build is on (parameter ``trt_auto_build: "true"`` or ``inferd serve --trt-auto-build``).
- With auto-build, a plan is built from the ``model.onnx`` beside it into a cache keyed by
  (ONNX sha256, GPU, TensorRT version, precision, profiles), and reused on the next start. Builds of
  one key are serialised with a file lock, so two server processes sharing a port build once.

:func:`resolve_plan` takes the builder as an argument, so all of this is unit-tested without TensorRT.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.base import EngineError, bool_parameter
from engines.plan_meta import (
    GpuIdentity,
    OptimizationProfile,
    PlanMetadata,
    PlanMetadataError,
    file_sha256,
    plan_cache_key,
    plan_incompatibility,
    read_metadata,
)

#: onnx path, output plan path, profiles → the metadata of the plan it wrote.
Builder = Callable[[Path, Path, Sequence[OptimizationProfile]], PlanMetadata]


def default_cache_dir() -> Path:
    """``$INFERD_TRT_CACHE``, else ``$XDG_CACHE_HOME/inferd/trt``, else ``~/.cache/inferd/trt``."""
    if os.environ.get("INFERD_TRT_CACHE"):
        return Path(os.environ["INFERD_TRT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferd" / "trt"


@dataclass(frozen=True, slots=True)
class TrtSettings:
    auto_build: bool = False
    cache_dir: Path | None = None
    precision: str = "fp16"
    strict_gpu: bool = True
    workspace_mb: int = 0

    @property
    def cache(self) -> Path:
        return self.cache_dir or default_cache_dir()


def trt_settings(parameters: Mapping[str, str]) -> TrtSettings:
    """TensorRT parameters of a model (server flags arrive here as defaults)."""
    workspace = parameters.get("trt_workspace_mb", "0") or "0"
    try:
        workspace_mb = int(workspace)
    except ValueError:
        raise EngineError(f"parameter 'trt_workspace_mb' must be an integer, got '{workspace}'") from None
    cache = parameters.get("trt_cache_dir", "")
    return TrtSettings(
        auto_build=bool_parameter(parameters, "trt_auto_build"),
        cache_dir=Path(cache) if cache else None,
        precision=(parameters.get("trt_precision") or "fp16").lower(),
        strict_gpu=bool_parameter(parameters, "trt_strict_gpu", True),
        workspace_mb=workspace_mb,
    )


@dataclass(frozen=True, slots=True)
class PlanChoice:
    path: Path
    meta: PlanMetadata | None
    notes: tuple[str, ...] = ()
    built: bool = False


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (flock where available; other processes building the same key wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except ImportError:  # not POSIX: builds of one key may race; os.replace keeps files whole
            pass
        yield


def _usable_cached(
    cached: Path, gpu: GpuIdentity, tensorrt_version: str, strict_gpu: bool
) -> tuple[PlanMetadata | None, str | None]:
    if not cached.is_file():
        return None, "not built yet"
    try:
        meta = read_metadata(cached)
    except PlanMetadataError as exc:
        return None, str(exc)
    if meta is None:
        return None, "its metadata is missing"
    reason = plan_incompatibility(meta, gpu, tensorrt_version, strict_gpu_name=strict_gpu)
    return (meta, None) if reason is None else (None, reason)


def resolve_plan(
    artifact: Path,
    gpu: GpuIdentity,
    tensorrt_version: str,
    settings: TrtSettings,
    profiles: Callable[[], Sequence[OptimizationProfile]],
    build: Builder,
) -> PlanChoice:
    """The plan to deserialise for ``artifact`` (``model.plan``, or ``model.onnx`` when only that exists)."""
    notes: list[str] = []
    onnx = artifact if artifact.suffix == ".onnx" else artifact.with_name("model.onnx")
    hint = (
        'rebuild it on this host with `inferd build`, or turn on auto-build (parameter trt_auto_build: "true" '
        "or `inferd serve --trt-auto-build`) to build one from model.onnx"
    )
    if artifact.suffix == ".plan" and artifact.is_file():
        reason: str | None
        try:
            meta = read_metadata(artifact)
        except PlanMetadataError as exc:
            meta, reason = None, f"{artifact.name}.json: {exc}"
        else:
            if meta is None:
                notes.append(
                    f"{artifact.name} has no {artifact.name}.json, so its GPU and TensorRT version are unchecked "
                    "(TensorRT refuses it if they differ)"
                )
                return PlanChoice(artifact, None, tuple(notes))
            reason = plan_incompatibility(meta, gpu, tensorrt_version, strict_gpu_name=settings.strict_gpu)
        if reason is None:
            return PlanChoice(artifact, meta, tuple(notes))
        if not settings.auto_build:
            raise EngineError(f"{artifact.name} refused: {reason}; {hint}")
        if not onnx.is_file():
            raise EngineError(
                f"{artifact.name} refused: {reason}; auto-build needs model.onnx beside it, and there is none"
            )
        notes.append(f"{artifact.name} refused: {reason}")
    elif not onnx.is_file():
        raise EngineError(f"no {artifact.name} and no model.onnx to build one from")
    elif not settings.auto_build:
        raise EngineError(f"no model.plan; {hint}")
    shapes = list(profiles())
    key = plan_cache_key(file_sha256(onnx), gpu, tensorrt_version, settings.precision, shapes)
    cached = settings.cache / f"{key}.plan"
    meta, _ = _usable_cached(cached, gpu, tensorrt_version, settings.strict_gpu)
    if meta is not None:
        notes.append(f"using the cached plan {cached}")
        return PlanChoice(cached, meta, tuple(notes))
    with _build_lock(settings.cache / f"{key}.lock"):
        meta, _ = _usable_cached(cached, gpu, tensorrt_version, settings.strict_gpu)  # another process built it
        if meta is not None:
            notes.append(f"using the cached plan {cached}")
            return PlanChoice(cached, meta, tuple(notes))
        meta = build(onnx, cached, shapes)
    notes.append(f"built a {settings.precision} plan from model.onnx in {meta.build_seconds:.1f}s into {cached}")
    return PlanChoice(cached, meta, tuple(notes), built=True)
