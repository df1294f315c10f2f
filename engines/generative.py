"""Generative backend: step-wise autoregressive models with a per-stream cache, stepped in batches.

A generative model is a class in ``model.py`` that config.pbtxt serves with ``engine: "generative"``. It
implements :class:`StepModel`: tokenising bytes, a ``prefill`` of one prompt into a fresh cache, and a
``decode`` step that advances *many* streams at once (one new token each), which is where throughput
comes from. The engine owns what every such model shares: the generation parameters, sampling
(temperature, top-k, top-p, per-stream seeds), EOS and stop sequences, and turning token bytes into
UTF-8 text pieces. The server's stream scheduler (server/streaming.py) decides which streams step
together; this module never sees gRPC or asyncio.

The signature is fixed: one BYTES input holding one prompt, and outputs ``token_ids`` (INT64 [-1]) and/or
``text`` (BYTES [1]), with ``max_batch_size: 0`` (each stream is one prompt). See docs/streaming.md.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engines.base import Arrays, EngineError, LoadSpec, Signature
from engines.user_code import close_model, import_model_file, module_name_for, takes_argument

ParamValue = bool | int | float | str

#: Output names a generative model may declare, with their dtypes.
OUTPUTS = {"token_ids": "INT64", "text": "BYTES"}
DEFAULT_MAX_TOKENS = 64
FINISH_LENGTH, FINISH_STOP, FINISH_EOS = "length", "stop", "eos"


@runtime_checkable
class StepModel(Protocol):
    """What a generative ``model.py`` class implements. Caches are opaque to the engine.

    ``new_cache(capacity)`` makes an empty cache for a stream that will hold at most ``capacity``
    positions (its prompt plus the tokens it may generate). ``prefill`` fills several new caches with
    their prompts (token id arrays) at once and returns next-token logits [n, vocab]. ``decode`` gets
    the caches of several streams and each stream's last token, appends that token to each cache and
    returns next-token logits, one row per stream, in the order given. ``encode`` and ``token_bytes``
    may be called from any thread; the others are called from one thread at a time.
    """

    eos_id: int | None
    max_context: int

    def encode(self, text: bytes) -> list[int]: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def new_cache(self, capacity: int) -> Any: ...

    def prefill(self, caches: Sequence[Any], prompts: Sequence[np.ndarray]) -> np.ndarray: ...

    def decode(self, caches: Sequence[Any], token_ids: np.ndarray) -> np.ndarray: ...

    def release(self, cache: Any) -> None: ...

    def cache_nbytes(self, cache: Any) -> int: ...


class GenerationError(ValueError):
    """A request the model cannot generate for (bad parameters or prompt); the server answers INVALID_ARGUMENT."""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Decoded ``PredictStreamRequest.parameters``; the names and defaults are the streaming contract."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[bytes, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


KNOWN_PARAMETERS = ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "ignore_eos")


def _number(key: str, value: ParamValue) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerationError(f"parameter '{key}' must be a number (double_param or int64_param)")
    return float(value)


def _integer(key: str, value: ParamValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationError(f"parameter '{key}' must be an integer (int64_param)")
    return value


def parse_parameters(
    parameters: Mapping[str, ParamValue], default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> GenerationParams:
    """Validate generation parameters; unknown names are refused so a typo never silently does nothing.

    ``stop`` is one stop sequence; more travel as ``stop.1``, ``stop.2``, … (a Parameter holds one value).
    """
    stops: list[bytes] = []
    values: dict[str, Any] = {"max_tokens": default_max_tokens}
    for key, value in parameters.items():
        if key == "stop" or key.startswith("stop."):
            if not isinstance(value, str) or not value:
                raise GenerationError(f"parameter '{key}' must be a non-empty string (string_param)")
            stops.append(value.encode("utf-8"))
        elif key == "max_tokens":
            values[key] = _integer(key, value)
            if values[key] < 1:
                raise GenerationError(f"parameter 'max_tokens' must be at least 1, got {values[key]}")
        elif key == "temperature":
            values[key] = _number(key, value)
            if not 0.0 <= values[key] <= 100.0:
                raise GenerationError(f"parameter 'temperature' must be in [0, 100], got {value}")
        elif key == "top_k":
            values[key] = _integer(key, value)
            if values[key] < 0:
                raise GenerationError(f"parameter 'top_k' must be >= 0 (0 = off), got {value}")
        elif key == "top_p":
            values[key] = _number(key, value)
            if not 0.0 < values[key] <= 1.0:
                raise GenerationError(f"parameter 'top_p' must be in (0, 1] (1 = off), got {value}")
        elif key == "seed":
            values[key] = _integer(key, value)
        elif key == "ignore_eos":
            if not isinstance(value, bool):
                raise GenerationError("parameter 'ignore_eos' must be a boolean (bool_param)")
            values[key] = value
        else:
            raise GenerationError(
                f"unknown generation parameter '{key}' (known: {', '.join(KNOWN_PARAMETERS)}, stop.N)"
            )
    return GenerationParams(stop=tuple(stops), **values)


def _utf8_complete(data: bytes) -> int:
    """Length of the prefix of ``data`` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return len(data) - back if back < need else len(data)
    return len(data)


class TextAssembler:
    """Token bytes in, text pieces out: whole UTF-8 characters only, stop sequences cut off.

    Bytes that might be the start of a stop sequence, or of a character split across tokens, are held
    back until the next token decides. Every piece is valid UTF-8 (undecodable bytes become U+FFFD),
    and the pieces concatenated are the whole generated text, stop sequence excluded.
    """

    __slots__ = ("_pending", "_stops")

    def __init__(self, stops: Sequence[bytes] = ()) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Add a token's bytes; returns (text released now, whether a stop sequence was completed)."""
        pending = self._pending + data
        hits = [i for i in (pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = b""
            return _valid_utf8(pending[: min(hits)]), True
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(pending)), hold, -1):
                if pending.endswith(stop[:size]):
                    hold = size
                    break
        cut = _utf8_complete(pending[: len(pending) - hold])
        self._pending = pending[cut:]
        return _valid_utf8(pending[:cut]), False

    def flush(self) -> bytes:
        """Everything still held, at the end of the stream."""
        pending, self._pending = self._pending, b""
        return _valid_utf8(pending)


def _valid_utf8(data: bytes) -> bytes:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode("utf-8")
    return data


@dataclass(eq=False, slots=True)
class Generation:
    """One stream's generation state: its prompt, cache, random stream and text so far."""

    params: GenerationParams
    prompt: np.ndarray
    rng: np.random.Generator
    text: TextAssembler
    cache: Any = None
    last_token: int = -1
    generated: int = 0
    finish_reason: str | None = None

    @property
    def started(self) -> bool:
        return self.cache is not None


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What one step produced for one stream: token ids (EOS excluded), released text, and why it ended."""

    token_ids: tuple[int, ...]
    text: bytes
    finish_reason: str | None = None


@dataclass(slots=True)
class Piece:
    """Consecutive step outputs of one stream merged into one message's outputs."""

    token_ids: list[int] = field(default_factory=list)
    text: bytes = b""
    finish_reason: str | None = None

    def add(self, out: StepOutput) -> None:
        self.token_ids.extend(out.token_ids)
        self.text += out.text
        self.finish_reason = out.finish_reason or self.finish_reason

    def outputs(self) -> dict[str, np.ndarray]:
        text = np.empty(1, dtype=object)
        text[0] = self.text
        return {"token_ids": np.asarray(self.token_ids, dtype=np.int64), "text": text}


def sample(logits: np.ndarray, gens: Sequence[Generation]) -> np.ndarray:
    """Next token per row: argmax for temperature 0, else Gumbel-max over the top-k / top-p set.

    Vectorised over the rows that sample; only the noise is drawn per stream, from its own seeded
    generator, so a stream's choices do not depend on which streams share its step.
    """
    tokens = np.argmax(logits, axis=1)
    rows = [i for i, g in enumerate(gens) if not g.params.greedy]
    if not rows:
        return tokens
    scaled = logits[rows].astype(np.float64) / np.array([[gens[i].params.temperature] for i in rows])
    vocab = scaled.shape[1]
    ascending = np.sort(scaled, axis=1)
    floor = np.full(len(rows), -np.inf)
    top_k = np.array([gens[i].params.top_k for i in rows])
    limited = (top_k > 0) & (top_k < vocab)
    if limited.any():
        index = np.where(limited, vocab - top_k, 0)
        floor = np.where(limited, ascending[np.arange(len(rows)), index], floor)
    top_p = np.array([gens[i].params.top_p for i in rows])
    if (top_p < 1.0).any():
        descending = ascending[:, ::-1]
        probs = np.exp(descending - descending[:, :1])
        probs /= probs.sum(axis=1, keepdims=True)
        before = np.cumsum(probs, axis=1) - probs  # mass of the tokens ranked above each one
        keep = np.maximum(1, (before < top_p[:, None]).sum(axis=1))
        cutoff = descending[np.arange(len(rows)), keep - 1]
        floor = np.where(top_p < 1.0, np.maximum(floor, cutoff), floor)
    scaled = np.where(scaled >= floor[:, None], scaled, -np.inf)
    noise = np.stack([gens[i].rng.gumbel(size=vocab) for i in rows])
    tokens[rows] = np.argmax(scaled + noise, axis=1)
    return tokens


class GenerativeEngine:
    """A StepModel plus the shared generation logic; called by one scheduler, one step at a time."""

    backend = "generative"
    #: answers PredictStream only; unary Predict is refused with FAILED_PRECONDITION
    streaming_only = True

    def __init__(self, spec: LoadSpec, model: StepModel, module: ModuleType | None = None) -> None:
        self.spec = spec
        self.model = model
        self._module = module
        self.prompt_input = spec.signature.inputs[0].name
        self.output_names = tuple(s.name for s in spec.signature.outputs)
        raw = spec.parameters.get("default_max_tokens", str(DEFAULT_MAX_TOKENS))
        try:
            self.default_max_tokens = int(raw)
        except ValueError:
            raise EngineError(f"parameter default_max_tokens must be an integer, got '{raw}'") from None
        self.eos_id = model.eos_id
        self.max_context = int(model.max_context)
        self._closed = False

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray]:
        raise EngineError(f"model {self.spec.model_name} generates token by token: use PredictStream")

    def start(self, inputs: Arrays, parameters: Mapping[str, ParamValue]) -> Generation:
        """Tokenise the prompt and check the request fits the context; no model work yet."""
        params = parse_parameters(parameters, self.default_max_tokens)
        prompt = np.asarray(inputs[self.prompt_input])
        if prompt.size != 1:
            raise GenerationError(
                f"input '{self.prompt_input}' must hold exactly one prompt (one stream per prompt), got {prompt.size}"
            )
        value = prompt.reshape(-1)[0]
        text = value if isinstance(value, bytes) else str(value).encode("utf-8")
        ids = np.asarray(self.model.encode(text), dtype=np.int64)
        if ids.size == 0:
            raise GenerationError("the prompt encodes to no tokens")
        if ids.size + params.max_tokens > self.max_context:
            raise GenerationError(
                f"prompt ({ids.size} tokens) + max_tokens ({params.max_tokens}) exceed the model's context of "
                f"{self.max_context} tokens"
            )
        rng = np.random.default_rng(params.seed)
        return Generation(params=params, prompt=ids, rng=rng, text=TextAssembler(params.stop))

    def step(self, gens: Sequence[Generation]) -> list[StepOutput]:
        """Advance every stream by one token: one batched prefill for the new ones, one batched decode for the rest."""
        if self._closed:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        model = self.model
        fresh = [i for i, g in enumerate(gens) if not g.started]
        running = [i for i, g in enumerate(gens) if g.started]
        logits: list[np.ndarray] = [np.empty(0)] * len(gens)
        if fresh:
            for i in fresh:
                gens[i].cache = model.new_cache(len(gens[i].prompt) + gens[i].params.max_tokens)
            first = np.asarray(model.prefill([gens[i].cache for i in fresh], [gens[i].prompt for i in fresh]))
            for row, i in enumerate(fresh):
                logits[i] = first[row]
        if running:
            last = np.array([gens[i].last_token for i in running], dtype=np.int64)
            batch = np.asarray(model.decode([gens[i].cache for i in running], last))
            for row, i in enumerate(running):
                logits[i] = batch[row]
        tokens = sample(np.stack(logits), gens)
        return [self._advance(gen, int(token)) for gen, token in zip(gens, tokens, strict=True)]

    def _advance(self, gen: Generation, token: int) -> StepOutput:
        gen.last_token = token
        gen.generated += 1
        params = gen.params
        if token == self.eos_id and not params.ignore_eos:
            gen.finish_reason = FINISH_EOS
            return StepOutput((), gen.text.flush(), FINISH_EOS)
        text, stopped = gen.text.feed(self.model.token_bytes(token))
        if stopped:
            gen.finish_reason = FINISH_STOP
        elif gen.generated >= params.max_tokens:
            gen.finish_reason = FINISH_LENGTH
            text += gen.text.flush()
        return StepOutput((token,), text, gen.finish_reason)

    def release(self, gen: Generation) -> int:
        """Free a stream's cache (it may still be unstarted); returns the bytes it held."""
        cache, gen.cache = gen.cache, None
        if cache is None:
            return 0
        size = int(self.model.cache_nbytes(cache))
        self.model.release(cache)
        return size

    def cache_bytes(self, gen: Generation) -> int:
        return 0 if gen.cache is None else int(self.model.cache_nbytes(gen.cache))

    def warmup(self) -> int:
        """Generate two greedy tokens from an empty prompt, so first-request allocation happens now."""
        gen = self.start({self.prompt_input: np.array([b""], dtype=object)}, {"max_tokens": 2, "temperature": 0.0})
        try:
            while gen.finish_reason is None:
                self.step([gen])
        finally:
            self.release(gen)
        return 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_model(self.model, self._module, module_name_for(self.spec, "generative"))


def check_signature(signature: Signature, max_batch_size: int, where: str) -> None:
    """The fixed generative signature: one BYTES prompt in, token_ids and/or text out, no batch dim."""
    if max_batch_size != 0:
        raise EngineError(f"{where}: a generative model takes one prompt per stream: set max_batch_size: 0")
    if len(signature.inputs) != 1 or signature.inputs[0].dtype != "BYTES":
        raise EngineError(f"{where}: a generative model has exactly one input, the BYTES prompt (e.g. dims: [1])")
    for sig in signature.outputs:
        if OUTPUTS.get(sig.name) != sig.dtype:
            raise EngineError(
                f"{where}: output '{sig.name}' {sig.dtype} is not a generative output "
                "(declare token_ids INT64 dims: [-1] and/or text BYTES dims: [1])"
            )


REQUIRED_METHODS = ("encode", "token_bytes", "new_cache", "prefill", "decode", "release", "cache_nbytes")


def load(spec: LoadSpec) -> GenerativeEngine:
    """Import ``model.py``, build its class (``Model`` or parameter ``python_class``) and warm it up."""
    where = f"model {spec.model_name} v{spec.version}: model.py"
    if not spec.artifact.is_file():
        raise EngineError(f"{where} does not exist at {spec.artifact}")
    check_signature(spec.signature, spec.max_batch_size, f"model {spec.model_name}")
    module = import_model_file(spec, where, "generative")
    class_name = spec.parameters.get("python_class", "Model")
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        sys.modules.pop(module_name_for(spec, "generative"), None)
        raise EngineError(f"{where} defines no class '{class_name}'")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        sys.modules.pop(module_name_for(spec, "generative"), None)
        raise EngineError(f"{where}: class {class_name} lacks {', '.join(missing)} (see engines/generative.py)")
    try:
        model = cls(spec) if takes_argument(cls) else cls()
        if not isinstance(getattr(model, "max_context", None), int) or not hasattr(model, "eos_id"):
            raise EngineError(f"class {class_name} must set max_context (int) and eos_id (int or None)")
        engine = GenerativeEngine(spec, model, module)
    except Exception as exc:
        sys.modules.pop(module_name_for(spec, "generative"), None)
        raise EngineError(f"{where}: creating {class_name} failed: {type(exc).__name__}: {exc}") from exc
    try:
        engine.warmup()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            engine.close()
        raise EngineError(f"{where}: a two-token warm-up generation failed: {type(exc).__name__}: {exc}") from exc
    return engine
