"""Reading and validating config.pbtxt into a ModelSpec.

The file is protobuf text format of inferd.v1.ModelConfig: one schema for files, the API and every
language. Errors name the file and, for syntax errors, the line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from google.protobuf import text_format

from engines.base import BACKENDS, Signature, TensorSig
from inferd.tensors import DTYPE_NAMES
from inferd.v1 import model_config_pb2
from server.core.echo import echo
from server.models import test_hooks
from server.quality.drift import DriftSpec
from server.quality.feedback import DEFAULT_MAX_RECORDS, DEFAULT_TTL_SECONDS, KINDS, FeedbackSpec
from server.scheduling.settings import (
    DEFAULT_MAX_ACTIVE,
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_QUEUE_SIZE,
    BatchingSpec,
    StreamingSpec,
)

CONFIG_FILE = "config.pbtxt"
EXECUTION_MODES = ("auto", "thread", "inline")
#: a model name: a folder name that is safe in a path, a log line and a metric label (checked with
#: fullmatch, so a trailing newline is not a name)
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def is_model_name(name: str) -> bool:
    """Whether ``name`` is a model name (the whole string, not a prefix or a line of it)."""
    return MODEL_NAME.fullmatch(name) is not None


class ConfigError(Exception):
    """A config.pbtxt that cannot be used; the message names the file (and line when known)."""


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to load, highest first."""
        ordered = sorted(available, reverse=True)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: self.num_versions]


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """Mirror ``fraction`` of the model's traffic to a label's or a version's slot."""

    fraction: float
    label: str = ""
    version: int = 0


@dataclass(frozen=True, slots=True)
class WarmupSpec:
    #: "file": the version's sample inputs (warmup.npz, engines/samples.py), rows repeated to each batch size
    kind: Literal["zero", "random", "file"] = "zero"
    batch_sizes: tuple[int, ...] = (1,)
    count: int = 1


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A validated model configuration: plain data, compared field by field to decide whether a reload
    replaces a version. The protobuf is kept only for metadata replies (the API views read it; nothing
    below this module does)."""

    name: str
    signature: Signature
    max_batch_size: int
    engines: tuple[str, ...]
    version_policy: VersionPolicy
    parameters: Mapping[str, str]
    instance_count: int
    batching: BatchingSpec | None
    version_labels: Mapping[str, int]
    execution: str
    traffic: tuple[tuple[str, int], ...] = ()
    shadow: ShadowSpec | None = None
    warmup: tuple[WarmupSpec, ...] = ()
    streaming: StreamingSpec = field(default_factory=StreamingSpec)
    #: live input drift against a reference profile; None = off
    drift: DriftSpec | None = None
    #: score predictions against later ground truth (the Feedback RPC); None = off
    feedback: FeedbackSpec | None = None
    proto: model_config_pb2.ModelConfig = field(default_factory=model_config_pb2.ModelConfig, compare=False, repr=False)


def parse_config_text(text: str, source: str) -> model_config_pb2.ModelConfig:
    """Parse text format; a syntax error names ``source`` and the line."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        prefix = f"{line}:{column} : "
        if detail.startswith(prefix):
            detail = detail[len(prefix) :]
        where = f"{source}:{line}:{column}" if line else source
        raise ConfigError(f"{where}: {detail}") from None
    return config


def load_config(path: Path, *, model_name: str | None = None, display: str | None = None) -> ModelSpec:
    """Read and validate ``path`` (a config.pbtxt); errors name it as ``display`` (e.g. relative to the
    repository root, since clients read these errors) or else as ``path``."""
    source = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    return spec_from_proto(parse_config_text(text, source), source, model_name=model_name)


def _tensor_sigs(
    specs: list[model_config_pb2.TensorSpec], kind: str, source: str, batched: bool
) -> tuple[TensorSig, ...]:
    sigs: list[TensorSig] = []
    seen: set[str] = set()
    for spec in specs:
        if not spec.name:
            raise ConfigError(f"{source}: an {kind} has no name")
        if spec.name in seen:
            raise ConfigError(f"{source}: {kind} '{spec.name}' is declared twice")
        seen.add(spec.name)
        dtype = DTYPE_NAMES.get(spec.data_type)
        if dtype is None:
            raise ConfigError(f"{source}: {kind} '{spec.name}' has no data_type (e.g. DATA_TYPE_FP32)")
        dims = tuple(int(d) for d in spec.dims)
        if not dims:
            raise ConfigError(f"{source}: {kind} '{spec.name}' has no dims (use e.g. dims: [-1, 256])")
        if any(d == 0 or d < -1 for d in dims):
            raise ConfigError(f"{source}: {kind} '{spec.name}' dims {list(dims)}: each must be positive or -1")
        if batched and dims[0] != -1:
            raise ConfigError(
                f"{source}: {kind} '{spec.name}' dims {list(dims)}: with max_batch_size > 0 the first "
                "dimension is the batch dimension and must be -1"
            )
        sigs.append(TensorSig(spec.name, dtype, dims))
    return tuple(sigs)


def _version_policy(config: model_config_pb2.ModelConfig, source: str) -> VersionPolicy:
    which = config.version_policy.WhichOneof("policy")
    if which is None:
        return VersionPolicy()
    if which == "all":
        return VersionPolicy(kind="all")
    if which == "specific":
        versions = tuple(int(v) for v in config.version_policy.specific.versions)
        if not versions or any(v <= 0 for v in versions):
            raise ConfigError(f"{source}: version_policy.specific needs one or more positive versions")
        return VersionPolicy(kind="specific", versions=versions)
    count = int(config.version_policy.latest.num_versions) or 1
    return VersionPolicy(kind="latest", num_versions=count)


def _batching(config: model_config_pb2.ModelConfig, name: str, source: str) -> BatchingSpec | None:
    if not config.HasField("dynamic_batching"):
        return None
    db = config.dynamic_batching
    if config.max_batch_size <= 0:
        raise ConfigError(f"{source}: dynamic_batching needs max_batch_size > 0")
    preferred = tuple(int(s) for s in db.preferred_batch_sizes)
    for size in preferred:
        if not 0 < size <= config.max_batch_size:
            raise ConfigError(
                f"{source}: preferred_batch_sizes {list(preferred)}: each must be in 1..max_batch_size "
                f"({config.max_batch_size})"
            )
    if db.priority_levels and db.default_priority_level > db.priority_levels:
        raise ConfigError(f"{source}: default_priority_level exceeds priority_levels ({db.priority_levels})")
    try:
        hold = test_hooks.hold_until_queued(name)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return BatchingSpec(
        max_queue_delay_us=int(db.max_queue_delay_microseconds),
        preferred_batch_sizes=tuple(sorted(preferred)),
        max_queue_size=int(db.max_queue_size) or DEFAULT_MAX_QUEUE_SIZE,
        default_timeout_us=int(db.default_timeout_microseconds),
        priority_levels=int(db.priority_levels),
        default_priority_level=int(db.default_priority_level) or (1 if db.priority_levels else 0),
        always_wait_for_window=bool(db.always_wait_for_window),
        hold_until_queued=hold,
    )


def traffic_weights_problem(weights: tuple[tuple[str, int], ...]) -> str | None:
    """What is wrong with a traffic split (label, weight) list, or None: one rule for config.pbtxt and SetTraffic."""
    for label, weight in weights:
        if weight < 0:
            return f"traffic weight of label {echo(label)} is negative ({weight})"
    if weights and not any(weight > 0 for _label, weight in weights):
        return "traffic weights are all zero: give at least one label a weight above 0, or no weights at all"
    return None


def _traffic(
    weights: list[model_config_pb2.TrafficWeight], labels: Mapping[str, int], source: str
) -> tuple[tuple[str, int], ...]:
    for weight in weights:
        if weight.label not in labels:
            raise ConfigError(f"{source}: traffic label '{weight.label}' is not in version_labels")
    pairs = tuple((w.label, int(w.weight)) for w in weights)
    problem = traffic_weights_problem(pairs)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    return tuple((label, weight) for label, weight in pairs if weight > 0)


def _shadow(config: model_config_pb2.ModelConfig, labels: Mapping[str, int], source: str) -> ShadowSpec | None:
    if not config.HasField("shadow"):
        return None
    shadow = config.shadow
    if not 0 < shadow.fraction <= 1:
        raise ConfigError(f"{source}: shadow.fraction must be in (0, 1], got {shadow.fraction}")
    if bool(shadow.label) == bool(shadow.version):
        raise ConfigError(f"{source}: shadow needs exactly one of label or version")
    if shadow.label and shadow.label not in labels:
        raise ConfigError(f"{source}: shadow label '{shadow.label}' is not in version_labels")
    return ShadowSpec(fraction=float(shadow.fraction), label=shadow.label, version=int(shadow.version))


def _streaming(config: model_config_pb2.ModelConfig, source: str) -> StreamingSpec:
    """``streaming { ... }`` with zeros replaced by the defaults (docs/config.md#streaming-streaming)."""
    streaming = config.streaming
    if streaming.chunk_rows < 0:
        raise ConfigError(f"{source}: streaming.chunk_rows must be >= 0")
    active = int(streaming.max_active_streams) or DEFAULT_MAX_ACTIVE
    return StreamingSpec(
        max_active=active,
        max_waiting=int(streaming.max_waiting_streams) or active,
        max_buffered=int(streaming.max_buffered_outputs) or DEFAULT_MAX_BUFFERED,
        max_step_streams=int(streaming.max_step_streams),
        chunk_rows=int(streaming.chunk_rows),
    )


_WARMUP_KINDS: dict[int, Literal["zero", "random", "file"]] = {
    model_config_pb2.ModelWarmup.INPUT_KIND_RANDOM: "random",
    model_config_pb2.ModelWarmup.INPUT_KIND_FILE: "file",
}


def _feedback(config: model_config_pb2.ModelConfig, outputs: list[TensorSig], source: str) -> FeedbackSpec | None:
    if not config.HasField("feedback"):
        return None
    f = config.feedback
    by_name = {sig.name: sig for sig in outputs}
    if f.output and f.output not in by_name:
        have = ", ".join(by_name)
        raise ConfigError(f"{source}: feedback.output {echo(f.output)} is not an output (outputs: {have})")
    sig = by_name[f.output] if f.output else outputs[0]
    if f.kind and f.kind not in KINDS:
        raise ConfigError(f"{source}: feedback.kind {echo(f.kind)} must be one of {', '.join(KINDS)}")
    if f.max_records < 0 or f.ttl_seconds < 0:
        raise ConfigError(f"{source}: feedback.max_records and feedback.ttl_seconds must be >= 0")
    kind = f.kind or ("classification" if len(sig.dims) >= 2 and sig.dims[-1] > 1 else "regression")
    if kind == "classification" and len(sig.dims) != 2:
        raise ConfigError(
            f"{source}: feedback scores classification of [rows, classes] outputs; '{sig.name}' has "
            f"dims {list(sig.dims)}"
        )
    return FeedbackSpec(
        output=sig.name,
        kind="classification" if kind == "classification" else "regression",
        max_records=int(f.max_records) or DEFAULT_MAX_RECORDS,
        ttl_seconds=int(f.ttl_seconds) or DEFAULT_TTL_SECONDS,
    )


def _drift(config: model_config_pb2.ModelConfig, source: str) -> DriftSpec | None:
    if not config.HasField("drift"):
        return None
    d, default = config.drift, DriftSpec()
    if d.reference_requests < 0 or d.window_rows < 0:
        raise ConfigError(f"{source}: drift.reference_requests and drift.window_rows must be >= 0")
    if not 0 <= d.sample_fraction <= 1:
        raise ConfigError(f"{source}: drift.sample_fraction must be in [0, 1] (0 = 0.25), got {d.sample_fraction}")
    if d.psi_threshold < 0:
        raise ConfigError(f"{source}: drift.psi_threshold must be >= 0 (0 = 0.2), got {d.psi_threshold}")
    return DriftSpec(
        reference_requests=int(d.reference_requests),
        psi_threshold=float(d.psi_threshold) or default.psi_threshold,
        window_rows=int(d.window_rows) or default.window_rows,
        sample_fraction=float(d.sample_fraction) or default.sample_fraction,
        max_features=int(d.max_features) or default.max_features,
    )


def _warmup(config: model_config_pb2.ModelConfig, source: str) -> tuple[WarmupSpec, ...]:
    out: list[WarmupSpec] = []
    for warm in config.warmup:
        sizes = tuple(int(b) for b in warm.batch_sizes) or (1,)
        if config.max_batch_size > 0 and any(not 0 < b <= config.max_batch_size for b in sizes):
            raise ConfigError(f"{source}: warmup batch_sizes {list(sizes)} must be in 1..max_batch_size")
        kind = _WARMUP_KINDS.get(warm.input_kind, "zero")
        out.append(WarmupSpec(kind=kind, batch_sizes=sizes, count=max(1, int(warm.count))))
    return tuple(out)


def spec_from_proto(config: model_config_pb2.ModelConfig, source: str, *, model_name: str | None = None) -> ModelSpec:
    """Validate a parsed ModelConfig; ``model_name`` (the folder name) wins and must match a set name."""
    name = model_name or config.name
    if not name:
        raise ConfigError(f"{source}: the model has no name")
    if not is_model_name(name):
        raise ConfigError(
            f"{source}: name {echo(name)} is not a model name (letters, digits, '_', '.', '-'; at most 128)"
        )
    if config.name and model_name and config.name != model_name:
        raise ConfigError(f"{source}: name {echo(config.name)} differs from its folder name {echo(model_name)}")
    if config.max_batch_size < 0:
        raise ConfigError(f"{source}: max_batch_size must be >= 0")
    batched = config.max_batch_size > 0
    inputs = _tensor_sigs(list(config.input), "input", source, batched)
    outputs = _tensor_sigs(list(config.output), "output", source, batched)
    if not inputs:
        raise ConfigError(f"{source}: the model declares no input")
    if not outputs:
        raise ConfigError(f"{source}: the model declares no output")
    engines = tuple(config.engine_preference) or ((config.engine,) if config.engine else ())
    for engine in engines:
        if engine not in BACKENDS:
            raise ConfigError(f"{source}: unknown engine '{engine}' (known: {', '.join(BACKENDS)})")
    labels = dict(config.version_labels)
    for label, version in labels.items():
        if version <= 0:
            raise ConfigError(f"{source}: version label '{label}' must point at a positive version")
    traffic = _traffic(list(config.traffic), labels, source)
    shadow = _shadow(config, labels, source)
    warmup = _warmup(config, source)
    execution = config.execution or "auto"
    if execution not in EXECUTION_MODES:
        raise ConfigError(f"{source}: execution '{execution}' must be one of {', '.join(EXECUTION_MODES)}")
    normalised = model_config_pb2.ModelConfig()
    normalised.CopyFrom(config)
    normalised.name = name
    return ModelSpec(
        name=name,
        signature=Signature(inputs, outputs),
        max_batch_size=int(config.max_batch_size),
        engines=engines,
        version_policy=_version_policy(config, source),
        parameters=dict(config.parameters),
        instance_count=max(1, int(config.instance_count)),
        batching=_batching(config, name, source),
        version_labels=labels,
        execution=execution,
        traffic=traffic,
        shadow=shadow,
        warmup=warmup,
        streaming=_streaming(config, source),
        drift=_drift(config, source),
        feedback=_feedback(config, list(outputs), source),
        proto=normalised,
    )
