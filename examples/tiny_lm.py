"""The ``tiny_lm`` example: a tiny decoder-only transformer for the generative engine, in numpy.

This file is copied verbatim into the repository as ``tiny_lm/1/model.py`` (so it imports only numpy
and the standard library) next to ``weights.npz``; it is also imported in-process by the builder and
by tests that run the model step by step.

Tokens are bytes (0-255) plus BOS (256) and EOS (257). The weights are made from code, with no
training: a fixed-seed random pre-LayerNorm transformer (causal multi-head attention, ReLU MLP)
whose embedding and unembedding are a low-rank factorisation of the byte-bigram log-probabilities of
``tiny_corpus.txt``, so the residual stream carries "the current byte" to the output and the random
blocks perturb it with context. It writes text that looks like the corpus, a byte at a time.

The per-stream KV cache lives in a pool shared by all streams, one row each; a released row is
filled with the last row, so the streams of a decode step usually occupy one contiguous block and
attention reads the pool through views (no gather). The pool grows (doubling) in rows as streams
join and in positions as longer streams arrive, so it stays as small as what is generating.
``decode`` advances any number of streams with one matrix product per projection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BOS_ID = 256
EOS_ID = 257
VOCAB = 258
WEIGHTS_FILE = "weights.npz"
CORPUS_FILE = Path(__file__).with_name("tiny_corpus.txt")


@dataclass(frozen=True)
class TinyLMConfig:
    """Shape of the model; the defaults are the example's (about 0.5 M parameters)."""

    d_model: int = 64
    n_layers: int = 8
    n_heads: int = 4
    d_ff: int = 256
    max_context: int = 1024
    rank: int = 48
    seed: int = 0
    #: scale of the random blocks' output projections relative to the bigram signal
    block_scale: float = 0.1


def build_weights(corpus: bytes, config: TinyLMConfig = TinyLMConfig()) -> dict[str, np.ndarray]:
    """All weights from the corpus' bigram counts and a fixed seed (deterministic, no training)."""
    d, layers, ff = config.d_model, config.n_layers, config.d_ff
    if config.rank > d:
        raise ValueError(f"rank {config.rank} exceeds d_model {d}")
    counts = np.zeros((VOCAB, VOCAB), dtype=np.float64)
    for paragraph in corpus.split(b"\n\n"):
        text = paragraph.strip()
        if text:
            seq = np.array([BOS_ID, *text, EOS_ID], dtype=np.int64)
            np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
    smoothed = counts + 1e-4
    log_probs = np.log(smoothed / smoothed.sum(axis=1, keepdims=True))
    u, s, vt = np.linalg.svd(log_probs)
    root = np.sqrt(s[: config.rank])
    embed = np.zeros((VOCAB, d))
    embed[:, : config.rank] = u[:, : config.rank] * root
    unembed = np.zeros((d, VOCAB))
    unembed[: config.rank] = root[:, None] * vt[: config.rank]
    rng = np.random.default_rng(config.seed)
    signal = float(np.sqrt((embed**2).sum(axis=1)).mean() / np.sqrt(d))  # typical per-dim size of an embedding
    out_scale = config.block_scale * signal
    weights = {
        "config": np.array([d, layers, config.n_heads, ff, config.max_context], dtype=np.int64),
        "embed": embed,
        "position": rng.normal(0.0, 0.1 * signal, size=(config.max_context, d)),
        "unembed": unembed,
        "qkv": rng.normal(0.0, 1.0 / np.sqrt(d), size=(layers, d, 3 * d)) * np.array([2.0, 2.0, 1.0]).repeat(d),
        "out": rng.normal(0.0, out_scale / np.sqrt(d), size=(layers, d, d)),
        "up": rng.normal(0.0, 1.0 / np.sqrt(d), size=(layers, d, ff)),
        "down": rng.normal(0.0, out_scale / np.sqrt(ff), size=(layers, ff, d)),
    }
    return {k: v.astype(np.int64 if k == "config" else np.float32) for k, v in weights.items()}


def write_model(version_dir: Path, config: TinyLMConfig = TinyLMConfig(), corpus: Path = CORPUS_FILE) -> None:
    """Write ``model.py`` (this file) and ``weights.npz`` into a version folder."""
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
    weights: dict[str, Any] = build_weights(corpus.read_bytes(), config)
    np.savez(version_dir / WEIGHTS_FILE, **weights)
    (version_dir / "model.json").write_text(str(asdict(config)) + "\n", encoding="utf-8")


def _layer_norm(x: np.ndarray) -> np.ndarray:
    """LayerNorm without affine parameters; ufunc reductions directly (ndarray.mean's wrapper costs more here)."""
    scale = np.float32(1.0 / x.shape[-1])
    centred = x - np.add.reduce(x, axis=-1, keepdims=True) * scale
    variance = np.add.reduce(centred * centred, axis=-1, keepdims=True) * scale
    result: np.ndarray = centred / np.sqrt(variance + np.float32(1e-5))
    return result


class Cache:
    """A stream's place in the pool: its row and how many positions it holds."""

    __slots__ = ("length", "row")

    def __init__(self, row: int) -> None:
        self.row = row
        self.length = 0


class Model:
    """The StepModel of engines/generative.py: byte tokenizer, prefill, batched decode, pooled KV cache."""

    eos_id: int | None = EOS_ID

    def __init__(self, spec: Any = None, *, weights: Path | None = None) -> None:
        path = weights if weights is not None else Path(spec.artifact).with_name(WEIGHTS_FILE)
        with np.load(path, allow_pickle=False) as data:
            w = {name: data[name] for name in data.files}
        d, layers, heads, _ff, context = (int(v) for v in w["config"])
        self.d_model, self.n_layers, self.n_heads, self.max_context = d, layers, heads, context
        self.head_dim = d // heads
        self.scale = np.float32(1.0 / math.sqrt(self.head_dim))
        self.embed, self.position, self.unembed = w["embed"], w["position"], w["unembed"]
        self.qkv, self.out, self.up, self.down = w["qkv"], w["out"], w["up"], w["down"]
        self._rows: list[Cache] = []
        #: the KV pool, [layer, row, head, position, head_dim]: for one layer, the rows' heads are evenly
        #: spaced matrices, so batched attention reads them in place
        self._k = self._v = self._zeros((layers, 0, heads, 0, self.head_dim))

    def _zeros(self, shape: tuple[int, ...]) -> Any:
        return np.zeros(shape, dtype=np.float32)

    def _dense(self, x: np.ndarray, weights: np.ndarray, layer: int) -> np.ndarray:
        """One projection of one layer (the weight-heavy part of a step; TorchModel swaps it)."""
        result: np.ndarray = x @ weights[layer]
        return result

    # tokenizer ---------------------------------------------------------------------------------
    def encode(self, text: bytes) -> list[int]:
        return [BOS_ID, *text]

    def token_bytes(self, token_id: int) -> bytes:
        return bytes((token_id,)) if 0 <= token_id < 256 else b""

    # cache pool --------------------------------------------------------------------------------
    def new_cache(self, capacity: int) -> Cache:
        """A row for a stream that will hold up to ``capacity`` positions (prompt + tokens to generate)."""
        row = len(self._rows)
        rows, positions = self._k.shape[1], self._k.shape[3]
        if row >= rows or capacity > positions:
            grown_rows = rows if row < rows else max(4, 2 * rows)
            grown_positions = (
                positions if capacity <= positions else min(self.max_context, max(64, capacity, 2 * positions))
            )
            self._grow(grown_rows, grown_positions)
        cache = Cache(row)
        self._rows.append(cache)
        return cache

    def _grow(self, rows: int, positions: int) -> None:
        used = max((c.length for c in self._rows), default=0)
        shape = (self.n_layers, rows, self.n_heads, positions, self.head_dim)
        k, v = self._zeros(shape), self._zeros(shape)
        n = len(self._rows)
        k[:, :n, :, :used] = self._k[:, :n, :, :used]
        v[:, :n, :, :used] = self._v[:, :n, :, :used]
        self._k, self._v = k, v

    def release(self, cache: Cache) -> None:
        """Give the row back: the last row moves into it, so live rows stay 0..n-1."""
        last = self._rows.pop()
        if last is not cache:
            row, size = cache.row, last.length
            self._k[:, row, :, :size] = self._k[:, last.row, :, :size]
            self._v[:, row, :, :size] = self._v[:, last.row, :, :size]
            last.row = row
            self._rows[row] = last
        cache.row, cache.length = -1, 0

    def cache_nbytes(self, cache: Cache) -> int:
        return cache.length * self.n_layers * self.d_model * 2 * 4

    # forward -----------------------------------------------------------------------------------
    def prefill(self, caches: Sequence[Cache], prompts: Sequence[np.ndarray]) -> np.ndarray:
        """Run several prompts through the model at once, filling their caches; next-token logits per prompt.

        The prompts' tokens are stacked into one matrix for the projections (a prompt of 40 tokens costs
        about what one decode step does); attention is causal within each prompt.
        """
        heads, hd, d = self.n_heads, self.head_dim, self.d_model
        lengths = [len(p) for p in prompts]
        ends = np.cumsum(lengths)
        ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in prompts])
        x = self.embed[ids] + self.position[np.concatenate([np.arange(n) for n in lengths])]
        masks = {n: np.triu(np.full((n, n), -np.inf, dtype=np.float32), k=1) for n in set(lengths)}
        for layer in range(self.n_layers):
            qkv = self._dense(_layer_norm(x), self.qkv, layer)
            attended = np.empty_like(x)
            for cache, n, end in zip(caches, lengths, ends, strict=True):
                part = qkv[end - n : end]
                q, k, v = (part[:, i * d : (i + 1) * d].reshape(n, heads, hd).transpose(1, 0, 2) for i in range(3))
                self._k[layer, cache.row, :, :n] = k
                self._v[layer, cache.row, :, :n] = v
                scores = (q @ k.transpose(0, 2, 1)) * self.scale + masks[n]
                scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
                scores /= scores.sum(axis=-1, keepdims=True)
                attended[end - n : end] = (scores @ v).transpose(1, 0, 2).reshape(n, d)
            x = x + self._dense(attended, self.out, layer)
            x = x + self._dense(np.maximum(self._dense(_layer_norm(x), self.up, layer), 0.0), self.down, layer)
        for cache, n in zip(caches, lengths, strict=True):
            cache.length = n
        result: np.ndarray = x[ends - 1] @ self.unembed
        return result

    def decode(self, caches: Sequence[Cache], token_ids: np.ndarray) -> np.ndarray:
        """Append one token to each stream and return next-token logits [len(caches), vocab]."""
        n, heads, hd, d = len(caches), self.n_heads, self.head_dim, self.d_model
        rows = np.fromiter((c.row for c in caches), dtype=np.int64, count=n)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        ids = np.asarray(token_ids, dtype=np.int64)[order]
        pos = np.fromiter((caches[i].length for i in order), dtype=np.int64, count=n)
        lo = int(rows[0])
        contiguous = int(rows[-1]) - lo + 1 == n
        span = int(pos.max()) + 1
        mask = np.where(np.arange(span)[None, :] <= pos[:, None], 0.0, -np.inf).astype(np.float32)[:, None, None, :]
        x = self.embed[ids] + self.position[pos]
        for layer in range(self.n_layers):
            qkv = self._dense(_layer_norm(x), self.qkv, layer)
            q = qkv[:, :d].reshape(n, heads, 1, hd)
            self._k[layer, rows, :, pos] = qkv[:, d : 2 * d].reshape(n, heads, hd)
            self._v[layer, rows, :, pos] = qkv[:, 2 * d :].reshape(n, heads, hd)
            if contiguous:
                keys = self._k[layer, lo : lo + n, :, :span]
                values = self._v[layer, lo : lo + n, :, :span]
            else:
                keys = self._k[layer, rows, :, :span]
                values = self._v[layer, rows, :, :span]
            scores = (q @ keys.transpose(0, 1, 3, 2)) * self.scale + mask
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            x = x + self._dense((scores @ values).reshape(n, d), self.out, layer)
            x = x + self._dense(np.maximum(self._dense(_layer_norm(x), self.up, layer), 0.0), self.down, layer)
        for cache in caches:
            cache.length += 1
        logits = np.empty((n, self.unembed.shape[1]), dtype=np.float32)
        logits[order] = x @ self.unembed
        return logits


def generate_greedy(model: Model, prompt: bytes, max_tokens: int) -> list[int]:
    """Reference loop (tests): prefill, then one decode per token, argmax each time; stops at EOS."""
    ids = np.array(model.encode(prompt))
    cache = model.new_cache(len(ids) + max_tokens)
    try:
        logits = model.prefill([cache], [ids])[0]
        tokens: list[int] = []
        while len(tokens) < max_tokens:
            token = int(np.argmax(logits))
            if token == EOS_ID:
                break
            tokens.append(token)
            if len(tokens) < max_tokens:
                logits = model.decode([cache], np.array([token]))[0]
        return tokens
    finally:
        model.release(cache)


class TorchModel(Model):
    """The same network with its projections run by torch on bfloat16 weights (parameter python_class).

    With weights larger than the CPU's caches a decode step then costs about as much for one stream as
    for sixteen: the weight-bandwidth-bound regime of real LLM serving, where continuous batching pays
    off; the streaming benchmark serves a wider copy this way. Attention, the KV pool and the residual
    stream stay numpy float32. Needs torch (imported here only); the numpy Model does not.
    """

    def __init__(self, spec: Any = None, *, weights: Path | None = None) -> None:
        import torch

        super().__init__(spec, weights=weights)
        parameters = dict(getattr(spec, "parameters", None) or {})
        torch.set_num_threads(int(parameters.get("intra_op_threads", "1")))
        self._torch = torch
        self._dtype = getattr(torch, parameters.get("weights_dtype", "bfloat16"))
        self._converted = {
            id(w): torch.from_numpy(np.ascontiguousarray(w)).to(self._dtype)
            for w in (self.qkv, self.out, self.up, self.down)
        }

    def _dense(self, x: np.ndarray, weights: np.ndarray, layer: int) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = torch.from_numpy(np.ascontiguousarray(x)).to(self._dtype) @ self._converted[id(weights)][layer]
            result: np.ndarray = out.float().numpy()
        return result
