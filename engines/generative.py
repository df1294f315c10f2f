"""Generative backend: step-wise autoregressive models with a per-stream cache, stepped in batches.

A generative model is a class in ``model.py`` that config.pbtxt serves with ``engine: "generative"``. It
implements :class:`StepModel`: tokenising bytes, a ``prefill`` of one prompt into a fresh cache, and a
``decode`` step that advances *many* streams at once (one new token each), which is where throughput
comes from. The engine owns what every such model shares (the pure parts are in engines/decoding.py):
the generation parameters, sampling (temperature, top-k, top-p, per-stream seeds), EOS and stop
sequences, and turning token bytes into UTF-8 text pieces. Each step yields one
:class:`~engines.stream_part.StreamPart` per stream. The server's stream scheduler
(server/scheduling/stream_scheduler.py) decides which streams step together; this module never sees
gRPC or asyncio.

The signature is fixed: one BYTES input holding one prompt, and outputs ``token_ids`` (INT64 [-1]) and/or
``text`` (BYTES [1]), with ``max_batch_size: 0`` (each stream is one prompt). See docs/streaming.md.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engines.base import Arrays, EngineError, InvalidInput, LoadSpec, Signature
from engines.decoding import (
    DEFAULT_MAX_TOKENS,
    Generation,
    GenerationError,
    TextAssembler,
    parse_parameters,
    sample,
)
from engines.stream_part import ParamValue, StreamPart
from engines.user_code import close_model, import_model_file, module_name_for, takes_argument

#: Output names a generative model may declare, with their dtypes.
OUTPUTS = {"token_ids": "INT64", "text": "BYTES"}
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

    ``prefill`` and ``decode`` that raise must leave the caches they were given as they were (a cache's
    length unchanged): the server then steps the streams of the failed step again in smaller groups to
    find the one at fault, and only that stream fails. Raise ``engines.model_api.InvalidInput`` for a prompt
    the model cannot take (an out-of-vocabulary id): the client gets INVALID_ARGUMENT, not INTERNAL.
    The engine itself refuses a prompt whose ids ``encode`` put outside ``0 .. vocab_size - 1`` (an
    optional attribute; without it, the width of the warm-up's logits), so ``prefill`` never sees one.
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
        #: token ids a prompt may hold are 0 .. vocab - 1: the model's ``vocab_size`` if it has one, else
        #: the width of the first logits it returns (the warm-up's), so no prompt reaches it unchecked
        vocab = getattr(model, "vocab_size", None)
        self.vocab: int | None = vocab if isinstance(vocab, int) and vocab > 0 else None
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
        try:
            ids = np.asarray(self.model.encode(text), dtype=np.int64).reshape(-1)
        except InvalidInput as exc:
            raise GenerationError(f"input '{self.prompt_input}': {exc}") from None
        except OverflowError:  # an id past int64: outside any vocabulary
            raise GenerationError(
                f"input '{self.prompt_input}': a token id is outside the model's vocabulary"
            ) from None
        if ids.size == 0:
            raise GenerationError("the prompt encodes to no tokens")
        self._check_ids(ids)
        if ids.size + params.max_tokens > self.max_context:
            raise GenerationError(
                f"prompt ({ids.size} tokens) + max_tokens ({params.max_tokens}) exceed the model's context of "
                f"{self.max_context} tokens"
            )
        rng = np.random.default_rng(params.seed)
        return Generation(params=params, prompt=ids, rng=rng, text=TextAssembler(params.stop))

    def _check_ids(self, ids: np.ndarray) -> None:
        """Refuse a prompt with a token id outside the vocabulary (the model would index out of range)."""
        low, high = int(ids.min()), int(ids.max())
        vocab = self.vocab
        if low >= 0 and (vocab is None or high < vocab):
            return
        bad = low if low < 0 else high
        position = int(np.flatnonzero(ids == bad)[0])
        limit = f"[0, {vocab})" if vocab is not None else "(negative)"
        raise GenerationError(
            f"input '{self.prompt_input}': token id {bad} at position {position} is outside the model's "
            f"vocabulary {limit}"
        )

    def step(self, gens: Sequence[Generation]) -> list[StreamPart]:
        """Advance every stream by one token: one batched prefill for the new ones, one batched decode for the rest.

        A step that raises leaves its streams as they were (the caches it made for new streams are
        released again; see :class:`StepModel` for the model's side), so the scheduler can step them
        again in smaller groups to find the stream at fault.
        """
        if self._closed:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        model = self.model
        fresh = [i for i, g in enumerate(gens) if not g.started]
        running = [i for i, g in enumerate(gens) if g.started]
        logits: list[np.ndarray] = [np.empty(0)] * len(gens)
        try:
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
        except BaseException:
            for i in fresh:  # back to unstarted: a later step prefills them afresh
                self.release(gens[i])
            raise
        stacked = np.stack(logits)
        if self.vocab is None and stacked.ndim == 2:
            self.vocab = int(stacked.shape[1])
        tokens = sample(stacked, gens)
        return [self._advance(gen, int(token)) for gen, token in zip(gens, tokens, strict=True)]

    def _advance(self, gen: Generation, token: int) -> StreamPart:
        gen.last_token = token
        gen.generated += 1
        params = gen.params
        if token == self.eos_id and not params.ignore_eos:
            gen.finish_reason = FINISH_EOS
            return self._part(gen, (), gen.text.flush())
        text, stopped = gen.text.feed(self.model.token_bytes(token))
        if stopped:
            gen.finish_reason = FINISH_STOP
        elif gen.generated >= params.max_tokens:
            gen.finish_reason = FINISH_LENGTH
            text += gen.text.flush()
        return self._part(gen, (token,), text)

    @staticmethod
    def _part(gen: Generation, token_ids: tuple[int, ...], text: bytes) -> StreamPart:
        """One step's message: its token (EOS excluded) and released text; the last also says why it ended."""
        texts = np.empty(1, dtype=object)
        texts[0] = text
        outputs = {"token_ids": np.asarray(token_ids, dtype=np.int64), "text": texts}
        if gen.finish_reason is None:
            return StreamPart(outputs)
        info: dict[str, ParamValue] = {
            "finish_reason": gen.finish_reason,
            "prompt_tokens": len(gen.prompt),
            "generated_tokens": gen.generated,
        }
        return StreamPart(outputs, True, info)

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
        raise EngineError(f"{where} does not exist")
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
