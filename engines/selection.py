"""The engine fallback chain: the first engine of the preference list that loads *and* passes parity serves.

For each engine named in ``engine_preference`` (in order):

1. the server must allow the engine (``inferd serve --allowed-engines``), and its artefact must exist in
   the version folder (``model.plan`` for tensorrt — or ``model.onnx`` when TensorRT auto-build is on)
   and resolve inside the model repository (a symlink out is refused);
2. an optional admission check may refuse it (the server's GPU memory budget);
3. it must load (a missing runtime, a refused plan or a failed dry run is a reason to move on);
4. unless it *is* the reference, its outputs on the warm-up inputs must match the reference engine's
   within the configured tolerances (``engines/parity.py``).

Each skipped engine leaves one note saying why (kept in ``VersionStatus.engine_notes``, shown by
``inferd models`` and logged); a candidate that passed parity leaves a note with the error measured.
Parity runs only when there is a choice to make (two or more engines listed) or when the model sets
``parity_reference`` explicitly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.base import BACKENDS, Engine, EngineError, LoadSpec, bool_parameter, load_engine, outside_reason
from engines.parity import ParityConfig, ParityReport, compare_outputs, merge_reports

log = logging.getLogger("inferd.engines")

#: engine name, spec → a refusal reason, or None to go ahead (e.g. the GPU memory budget).
Admission = Callable[[str, LoadSpec], str | None]
#: engine name → whether the server lets it serve (``--allowed-engines``).
Allowed = Callable[[str], bool]


class NoEngineServes(EngineError):
    """Every candidate was skipped; ``notes`` says why, one line per engine."""

    def __init__(self, notes: Sequence[str]) -> None:
        super().__init__("; ".join(notes) or "no engine could load the model")
        self.notes = list(notes)


@dataclass(slots=True)
class Selection:
    engine: Engine
    backend: str
    notes: list[str] = field(default_factory=list)
    parity: ParityReport | None = None


def artifact_for(name: str, version_dir: Path, parameters: Mapping[str, str]) -> Path | None:
    """The file engine ``name`` loads from ``version_dir``, or None when there is none."""
    backend = BACKENDS[name]
    artifact = version_dir / backend.artifact
    if artifact.is_file():
        return artifact
    if name == "tensorrt" and (version_dir / "model.onnx").is_file() and bool_parameter(parameters, "trt_auto_build"):
        return version_dir / "model.onnx"
    return None


def runs_on_gpu(name: str, spec: LoadSpec) -> bool:
    """Whether engine ``name`` would place this model on a GPU (what the memory budget applies to)."""
    if name == "tensorrt":
        return True
    if name == "torch":
        return spec.device.startswith("cuda")
    if name == "onnxruntime":
        providers = spec.parameters.get("providers", "").lower()
        return "cuda" in providers or "tensorrt" in providers or (not providers and spec.device.startswith("cuda"))
    return False


def choose_reference(
    candidates: Sequence[str], version_dir: Path, parity: ParityConfig, *, explicit: bool
) -> str | None:
    """The reference engine's name, or None when parity does not apply.

    ``auto``: onnxruntime (on CPU) when ``model.onnx`` exists, else the last engine of the list.
    """
    if not parity.enabled or (len(candidates) < 2 and not explicit):
        return None
    if parity.reference.lower() != "auto":
        if parity.reference not in BACKENDS:
            raise EngineError(f"parity_reference '{parity.reference}' is not an engine ({', '.join(BACKENDS)}) or none")
        return parity.reference
    if (version_dir / "model.onnx").is_file():
        return "onnxruntime"
    return candidates[-1] if candidates else None


def is_reference(name: str, engine: Engine, reference: str) -> bool:
    """A candidate is the reference when it is the same engine on CPU (onnxruntime with CPU providers only)."""
    if name != reference:
        return False
    if name == "onnxruntime":
        providers = getattr(engine, "providers", ["CPUExecutionProvider"])
        return list(providers) == ["CPUExecutionProvider"]
    if name == "torch":
        return str(getattr(engine, "device", "cpu")) == "cpu"
    return True


def reference_spec(name: str, spec: LoadSpec) -> LoadSpec:
    """The reference runs on CPU: onnxruntime with the CPU provider, torch on the CPU device."""
    parameters = dict(spec.parameters)
    if name == "onnxruntime":
        parameters["providers"] = "cpu"
    for key in ("autocast", "cuda_graphs", "torch_compile"):
        parameters.pop(key, None)
    return dataclasses.replace(spec, parameters=parameters, device="cpu", instances=1)


class _Reference:
    """The reference engine, loaded on first use; its outputs on each parity batch are computed once."""

    def __init__(
        self,
        name: str,
        version_dir: Path,
        make_spec: Callable[[str, Path], LoadSpec],
        parameters: Mapping[str, str],
        allowed: Allowed | None = None,
    ) -> None:
        self.name = name
        self._version_dir = version_dir
        self._make_spec = make_spec
        self._parameters = parameters
        self._allowed = allowed
        self._engine: Engine | None = None
        self._error: str | None = None
        self._outputs: dict[int, dict[str, np.ndarray]] = {}

    @property
    def label(self) -> str:
        return f"{self.name} on CPU" if self.name in ("onnxruntime", "torch") else self.name

    def outputs(self, index: int, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = self._outputs.get(index)
        if found is not None:
            return found
        if self._error is not None:
            raise EngineError(self._error)
        if self._engine is None:
            if self._allowed is not None and not self._allowed(self.name):
                self._error = f"the reference engine {self.name} is not allowed on this server (--allowed-engines)"
                raise EngineError(self._error)
            artifact = artifact_for(self.name, self._version_dir, self._parameters)
            if artifact is None:
                self._error = f"the reference engine {self.name} has no {BACKENDS[self.name].artifact}"
                raise EngineError(self._error)
            spec = self._make_spec(self.name, artifact)
            refused = outside_reason(artifact, spec.root) if spec.root is not None else None
            if refused is not None:
                self._error = f"the reference engine {self.name}: {refused}"
                raise EngineError(self._error)
            try:
                self._engine = load_engine(self.name, reference_spec(self.name, spec))
            except EngineError as exc:
                self._error = f"the reference engine {self.name} did not load: {exc}"
                raise EngineError(self._error) from None
        result = {k: np.asarray(v) for k, v in self._engine.infer(inputs).items()}
        self._outputs[index] = result
        return result

    def close(self) -> None:
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.close()
            self._engine = None


def check_parity(
    engine: Engine,
    reference: _Reference,
    batches: Sequence[Mapping[str, np.ndarray]],
    output_names: Sequence[str],
    parity: ParityConfig,
) -> ParityReport:
    atol, rtol = parity.tolerances(str(getattr(engine, "precision", "fp32")))
    reports = []
    for index, inputs in enumerate(batches):
        expected = reference.outputs(index, inputs)
        got = engine.infer(inputs)
        reports.append(compare_outputs(got, expected, output_names, atol, rtol))
    return merge_reports(reports, atol, rtol)


def select_engine(
    candidates: Sequence[str],
    version_dir: Path,
    make_spec: Callable[[str, Path], LoadSpec],
    *,
    parameters: Mapping[str, str],
    parity: ParityConfig,
    parity_batches: Callable[[], Sequence[Mapping[str, np.ndarray]]],
    output_names: Sequence[str],
    explicit_reference: bool = False,
    admit: Admission | None = None,
    where: str = "",
    allowed: Allowed | None = None,
) -> Selection:
    """Walk ``candidates`` as the module docstring says; EngineError with every reason when none serves."""
    notes: list[str] = []

    def skip(name: str, reason: str) -> None:
        notes.append(f"{name}: {reason}")
        log.warning("%s: engine %s skipped: %s", where, name, reason)

    reference_name = choose_reference(candidates, version_dir, parity, explicit=explicit_reference)
    reference = _Reference(reference_name, version_dir, make_spec, parameters, allowed) if reference_name else None
    batches: Sequence[Mapping[str, np.ndarray]] | None = None
    try:
        for name in candidates:
            if allowed is not None and not allowed(name):
                skip(name, f"engine {name} is not allowed on this server (--allowed-engines)")
                continue
            artifact = artifact_for(name, version_dir, parameters)
            if artifact is None:
                skip(name, f"no {BACKENDS[name].artifact} in version {version_dir.name}")
                continue
            spec = make_spec(name, artifact)
            refused = outside_reason(artifact, spec.root) if spec.root is not None else None
            if refused is not None:
                skip(name, refused)
                continue
            if admit is not None:
                refusal = admit(name, spec)
                if refusal:
                    skip(name, refusal)
                    continue
            try:
                engine = load_engine(name, spec)
            except EngineError as exc:
                skip(name, str(exc))
                continue
            notes.extend(str(n) for n in getattr(engine, "notes", ()) or ())
            report: ParityReport | None = None
            if reference is not None and getattr(engine, "streaming_only", False):
                notes.append(f"{name}: parity not checked: a streaming-only engine has no infer() to compare")
            elif reference is not None and not is_reference(name, engine, reference.name):
                if batches is None:
                    batches = parity_batches()
                try:
                    report = check_parity(engine, reference, batches, output_names, parity)
                except Exception as exc:  # the reference is broken, or the candidate fails on real inputs
                    message = str(exc) or type(exc).__name__
                    if reference._error is not None:
                        notes.append(f"{name}: parity not checked: {message}")
                        log.warning("%s: %s: parity not checked: %s", where, name, message)
                    else:
                        _close(engine)
                        skip(name, f"failed on the parity inputs: {message}")
                        continue
                else:
                    if not report.ok:
                        _close(engine)
                        skip(name, f"does not match {reference.label} on the warm-up inputs: {report.summary()}")
                        continue
                    notes.append(f"{name}: matches {reference.label}: {report.summary()}")
            return Selection(engine, name, notes, report)
    finally:
        if reference is not None:
            reference.close()
    raise NoEngineServes(notes)


def _close(engine: Engine) -> None:
    with contextlib.suppress(Exception):
        engine.close()
