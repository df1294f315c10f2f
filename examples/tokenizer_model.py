"""The ``tokenizer`` example's model.py: UTF-8 bytes -> ids that feed ``text_encoder``.

Copied verbatim into the repository as ``tokenizer/1/model.py``, so it imports only numpy and the
standard library. Ids: 0 = padding, 1 = BOS (always at position 0), byte value + 2 for each byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

PAD_ID = 0
BOS_ID = 1
BYTE_OFFSET = 2
SEQ_LEN = 128


class Model:
    """Byte-level tokenizer: stateless, so the engine may call it from several threads at once."""

    thread_safe = True

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = np.asarray(inputs["text"]).reshape(-1)
        ids = np.full((len(texts), SEQ_LEN), PAD_ID, dtype=np.int64)
        ids[:, 0] = BOS_ID
        for row, text in enumerate(texts):
            data = _as_bytes(text)[: SEQ_LEN - 1]  # byte-level truncation may split a UTF-8 character
            ids[row, 1 : 1 + len(data)] = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + BYTE_OFFSET
        return {"input_ids": ids}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
