"""What every generative model shares, apart from the model: generation parameters, sampling, text.

The pure half of the generative engine (engines/generative.py): parsing and validating a stream's
generation parameters, per-stream sampling that does not depend on which streams share a step, and
turning token bytes into whole UTF-8 text pieces with stop sequences cut off. No model, no threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.base import InvalidInput, echo
from engines.stream_part import ParamValue

DEFAULT_MAX_TOKENS = 64


class GenerationError(InvalidInput, ValueError):
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
                raise GenerationError(f"parameter {echo(key)} must be a non-empty string (string_param)")
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
            if values[key] < 0:
                raise GenerationError(f"parameter 'seed' must be >= 0, got {value}")
        elif key == "ignore_eos":
            if not isinstance(value, bool):
                raise GenerationError("parameter 'ignore_eos' must be a boolean (bool_param)")
            values[key] = value
        else:
            raise GenerationError(
                f"unknown generation parameter {echo(key)} (known: {', '.join(KNOWN_PARAMETERS)}, stop.N)"
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
