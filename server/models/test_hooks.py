"""Test-only hooks, read from the environment: never part of config.pbtxt or any public contract.

Like Triton's environment-variable test hooks, they let a test make the server deterministic without
widening the config schema that users see. Each is off unless its variable is set.

``INFERD_TEST_HOLD_UNTIL_QUEUED`` — comma-separated ``model=N`` pairs (e.g. ``held4=4,held3=3``): the
batching queue of that model stays closed until N requests wait, so a test gets a batch of a known size
(``BatchingSpec.hold_until_queued``; models without ``dynamic_batching`` ignore it).
"""

from __future__ import annotations

import os

HOLD_UNTIL_QUEUED_ENV = "INFERD_TEST_HOLD_UNTIL_QUEUED"


def parse_model_counts(text: str, variable: str) -> dict[str, int]:
    """``"a=4,b=3"`` → ``{"a": 4, "b": 3}``; a malformed pair raises ValueError naming ``variable``."""
    counts: dict[str, int] = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        model, sep, value = pair.partition("=")
        model, value = model.strip(), value.strip()
        if not sep or not model or not value.isdigit():
            raise ValueError(f"{variable}: '{pair}' is not model=N with N a count >= 0")
        counts[model] = int(value)
    return counts


def hold_until_queued(model: str) -> int:
    """The hold count the environment sets for ``model`` (0 = off)."""
    text = os.environ.get(HOLD_UNTIL_QUEUED_ENV, "")
    if not text:
        return 0
    return parse_model_counts(text, HOLD_UNTIL_QUEUED_ENV).get(model, 0)
