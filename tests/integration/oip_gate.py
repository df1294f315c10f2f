"""A gate held by the OIP stream tests' python model (same process as the in-process server)."""

from __future__ import annotations

import threading

#: set = the held model answers; clear = it blocks in infer
GATE = threading.Event()
