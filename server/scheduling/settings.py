"""The data plane's settings as plain data: the config loader (server/models/config.py) fills them in.

They live here, below the control plane, so that the batcher and the stream schedulers never import
the loader or protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_ACTIVE = 16
DEFAULT_MAX_BUFFERED = 16
#: requests a model's batching queue holds when its config sets no ``max_queue_size``: overload is
#: refused with RESOURCE_EXHAUSTED at once instead of growing the queue (and everyone's latency) forever
DEFAULT_MAX_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class BatchingSpec:
    """``dynamic_batching { ... }`` of one model."""

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    default_timeout_us: int = 0
    priority_levels: int = 0
    default_priority_level: int = 0
    always_wait_for_window: bool = False
    #: test-only: keep the queue closed until this many requests wait (set through the environment,
    #: never through the public config; see server/models/test_hooks.py)
    hold_until_queued: int = 0


@dataclass(frozen=True, slots=True)
class StreamingSpec:
    """The streaming bounds of one model (config ``streaming { ... }``, zeros replaced by defaults)."""

    max_active: int = DEFAULT_MAX_ACTIVE
    max_waiting: int = DEFAULT_MAX_ACTIVE
    max_buffered: int = DEFAULT_MAX_BUFFERED
    #: streams per engine step; 0 = all active streams (continuous batching), 1 = one at a time
    max_step_streams: int = 0
    #: rows per message of a chunked PredictStream when the request sets no chunk_rows (0 = max_batch_size)
    chunk_rows: int = 0
