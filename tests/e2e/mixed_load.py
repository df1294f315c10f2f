"""A varied load on the example models, so every dashboard panel has something real to show.

Ordinary models at a rising rate (workers join one by one), a generative model streaming tokens, and a
trickle of failures: unknown models (NOT_FOUND), malformed inputs (INVALID_ARGUMENT) and deadlines too
short to meet (DEADLINE_EXCEEDED). Pacing sleeps only shape the load; nothing waits on them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import numpy as np

from inferd import AsyncClient, InferdError

Call = Callable[[AsyncClient, np.random.Generator], Awaitable[object]]
#: the model name of the NOT_FOUND calls
UNKNOWN_MODEL = "no_such_model"


async def _mlp(client: AsyncClient, rng: np.random.Generator) -> object:
    rows = int(rng.integers(1, 9))
    return await client.predict("mlp_ranker", {"features": rng.random((rows, 256), dtype=np.float32)})


async def _tabular(client: AsyncClient, rng: np.random.Generator) -> object:
    rows = int(rng.integers(1, 17))
    return await client.predict("tabular_torch", {"features": rng.random((rows, 16), dtype=np.float32)})


async def _encoder(client: AsyncClient, rng: np.random.Generator) -> object:
    ids = rng.integers(0, 258, size=(int(rng.integers(1, 4)), 128), dtype=np.int64)
    # one call in eight gets a deadline it cannot meet
    timeout = 0.002 if rng.random() < 0.125 else 30.0
    return await client.predict("text_encoder", {"input_ids": ids}, timeout=timeout)


async def _tokenizer(client: AsyncClient, rng: np.random.Generator) -> object:
    texts = np.array([b"the quick brown fox", b"jumps over the lazy dog"], dtype=object)
    return await client.predict("tokenizer", {"text": texts})


async def _generate(client: AsyncClient, rng: np.random.Generator) -> object:
    max_tokens = int(rng.integers(12, 40))
    pieces = [p async for p in client.generate("tiny_lm", "Once upon a time", max_tokens=max_tokens, temperature=0.8)]
    return pieces


async def _unknown_model(client: AsyncClient, rng: np.random.Generator) -> object:
    return await client.predict(UNKNOWN_MODEL, {"x": np.zeros((1, 4), dtype=np.float32)})


async def _malformed(client: AsyncClient, rng: np.random.Generator) -> object:
    return await client.predict("mlp_ranker", {"features": np.zeros((1, 7), dtype=np.float32)})


#: (model the calls name, call, workers, pause between one worker's calls in seconds)
PLAN: list[tuple[str, Call, int, float]] = [
    ("mlp_ranker", _mlp, 8, 0.01),
    ("tabular_torch", _tabular, 3, 0.02),
    ("text_encoder", _encoder, 2, 0.05),
    ("tokenizer", _tokenizer, 1, 0.05),
    ("tiny_lm", _generate, 3, 0.1),
    (UNKNOWN_MODEL, _unknown_model, 1, 0.4),
    ("mlp_ranker", _malformed, 1, 0.4),
]


async def mixed_load(address: str, seconds: float, seed: int = 7) -> Counter[tuple[str, str]]:
    """Run the plan for ``seconds``; returns how many calls ended how, by (model named, status name) as
    the client saw them. Workers of each kind start staggered over the first half: the rate climbs."""
    outcomes: Counter[tuple[str, str]] = Counter()
    end = time.monotonic() + seconds

    async def worker(model: str, call: Call, delay: float, pause: float, rng: np.random.Generator) -> None:
        await asyncio.sleep(delay)
        while time.monotonic() < end:
            try:
                await call(client, rng)
                outcomes[model, "OK"] += 1
            except InferdError as err:
                outcomes[model, err.code.name] += 1
            await asyncio.sleep(pause * float(rng.exponential()))

    async with AsyncClient(address, timeout=30) as client:
        seeds = np.random.SeedSequence(seed).spawn(sum(workers for _, _, workers, _ in PLAN))
        tasks: list[asyncio.Task[None]] = []
        for model, call, workers, pause in PLAN:
            for i in range(workers):
                delay = seconds / 2 * i / workers
                rng = np.random.default_rng(seeds[len(tasks)])
                tasks.append(asyncio.create_task(worker(model, call, delay, pause, rng)))
        await asyncio.gather(*tasks)
    return outcomes
