from __future__ import annotations

import random
from collections import Counter

from server.models.routing import TrafficSplit, should_mirror


def test_split_without_positive_weights_is_none():
    assert TrafficSplit.of((("stable", 0),)) is None


def test_random_split_follows_the_weights():
    split = TrafficSplit.of((("stable", 90), ("canary", 10)))
    assert split is not None
    rng = random.Random(7)
    counts = Counter(split.pick(rng=rng) for _ in range(10_000))
    assert 0.88 < counts["stable"] / 10_000 < 0.92


def test_a_routing_key_always_gets_the_same_label():
    split = TrafficSplit.of((("stable", 50), ("canary", 50)))
    assert split is not None
    for key in ("user-1", "user-2", "tenant/42"):
        assert len({split.pick(key) for _ in range(50)}) == 1


def test_routing_keys_spread_by_the_weights():
    split = TrafficSplit.of((("stable", 75), ("canary", 25)))
    assert split is not None
    counts = Counter(split.pick(f"user-{i}") for i in range(8_000))
    assert 0.72 < counts["stable"] / 8_000 < 0.78


def test_full_fraction_always_mirrors_and_zero_never():
    rng = random.Random(1)
    assert all(should_mirror(1.0, rng) for _ in range(100))
    assert not any(should_mirror(0.0, rng) for _ in range(100))
