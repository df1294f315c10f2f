"""Which labelled version an unpinned request goes to: weighted traffic split, sticky by routing key.

Pure functions of the policy and the key, so the same key always lands on the same label while the
weights stay the same, and tests can check the split without a server.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    labels: tuple[str, ...]
    #: cumulative weights, e.g. (95, 100) for stable 95 / canary 5
    bounds: tuple[int, ...]

    @classmethod
    def of(cls, weights: tuple[tuple[str, int], ...]) -> TrafficSplit | None:
        live = [(label, weight) for label, weight in weights if weight > 0]
        if not live:
            return None
        bounds: list[int] = []
        total = 0
        for _label, weight in live:
            total += weight
            bounds.append(total)
        return cls(tuple(label for label, _ in live), tuple(bounds))

    @property
    def total(self) -> int:
        return self.bounds[-1]

    def pick(self, routing_key: str = "", rng: random.Random | None = None) -> str:
        """A label: by a stable hash of ``routing_key`` when given (sticky), else at random."""
        if routing_key:
            point = zlib.crc32(routing_key.encode()) % self.total
        else:
            point = int((rng or random).random() * self.total)
        return self.labels[bisect_right(self.bounds, point)]


def should_mirror(fraction: float, rng: random.Random | None = None) -> bool:
    return fraction >= 1.0 or (rng or random).random() < fraction
