"""Per-principal rate limits: a token bucket for calls and a cap on open streams.

Why here and not in a proxy: limits are per *principal* (who the interceptor authenticated), which a
plain L4 balancer cannot see, and model calls are expensive enough that one runaway client should be
stopped at the door, before its request is decoded.

Cost model. Everything runs on the server's one event loop, so there are no locks: :meth:`RateLimiter.admit`
is a dict lookup, a clock read and a few float operations. A principal's bucket is made on its first call
and dropped once it has been idle long enough to be full again (a full bucket and no bucket behave the
same), so memory follows the principals active in the last few seconds, not every JWT subject ever seen.
The sweep that drops them runs when the table has doubled since the last one or every
:data:`SWEEP_INTERVAL_S`, so its cost per call is O(1) amortised.

Semantics:

- a call takes one token; with none left it is refused at once (RESOURCE_EXHAUSTED) and told how long
  until the next token (``grpc-retry-pushback-ms`` trailing metadata, :func:`pushback_metadata`);
- an open stream also counts against ``max_streams`` until it ends (:meth:`RateLimiter.open_stream`);
- each message of a client-streaming call takes a token too, but is *paced* (:meth:`RateLimiter.pace`
  waits for it) rather than failed: failing the 6th message of a stream would throw away the stream;
- anonymous callers share one bucket (``anonymous:`` in the config, else ``default:``);
- a principal listed with ``null`` is not limited, whatever ``default`` says.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from server.core.errors import ResourceExhausted

#: the trailing metadata key gRPC clients with a retry policy read to wait before retrying
PUSHBACK_KEY = "grpc-retry-pushback-ms"
#: seconds between sweeps of idle buckets (at most; a doubled table sweeps sooner)
SWEEP_INTERVAL_S = 60.0
#: the table may grow to this many buckets before the first size-triggered sweep
MIN_SWEEP_SIZE = 1024
#: a token short by less than this is a whole token (clock arithmetic in floats: 0.05 + 0.05 s is not quite 0.1 s)
_EPSILON = 1e-9
#: the name the limiter gives the shared bucket of callers without credentials
ANONYMOUS = "anonymous"

Clock = Callable[[], float]


class RateLimitConfigError(ValueError):
    """A ``rate_limits`` entry is invalid; ``path`` is the keys leading to it, for the caller to name the line."""

    def __init__(self, message: str, path: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def pushback_metadata(seconds: float) -> tuple[tuple[str, str], ...]:
    """``grpc-retry-pushback-ms`` for a wait of ``seconds`` (rounded up: a client waiting that long finds a token)."""
    return ((PUSHBACK_KEY, str(max(1, math.ceil(seconds * 1000)))),)


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """One principal's limits: ``requests_per_second`` refill, ``burst`` bucket size, ``max_streams`` open streams."""

    requests_per_second: float
    burst: int
    #: open streams (PredictStream, OIP ModelStreamInfer) at once; None = no cap
    max_streams: int | None = None

    def __post_init__(self) -> None:
        rate = self.requests_per_second
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"requests_per_second must be a number above 0, not {rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a whole number of at least 1, not {self.burst!r}")
        streams = self.max_streams
        if streams is not None and (isinstance(streams, bool) or not isinstance(streams, int) or streams < 0):
            raise ValueError(f"max_streams must be a whole number of at least 0, not {streams!r}")

    @classmethod
    def parse(cls, raw: Any, path: tuple[str, ...]) -> RateLimitSpec:
        """From a YAML mapping ``{requests_per_second, burst, max_streams}``; ``burst`` defaults to one
        second's worth of requests (at least 1)."""
        where = ".".join(path)
        if not isinstance(raw, Mapping):
            raise RateLimitConfigError(
                f"{where} must be a mapping with requests_per_second, burst and max_streams", path
            )
        unknown = sorted(str(k) for k in raw if k not in ("requests_per_second", "burst", "max_streams"))
        if unknown:
            raise RateLimitConfigError(
                f"{where}: unknown key {unknown[0]!r} (expected requests_per_second, burst, max_streams)",
                (*path, unknown[0]),
            )
        if "requests_per_second" not in raw:
            raise RateLimitConfigError(f"{where}: requests_per_second is required", path)
        rate = raw["requests_per_second"]
        burst = raw.get("burst")
        if burst is None and isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate):
            burst = max(1, math.ceil(rate))
        try:
            return cls(rate, burst, raw.get("max_streams"))  # type: ignore[arg-type]  # checked in __post_init__
        except ValueError as exc:
            key = str(exc).split(" ", 1)[0]
            raise RateLimitConfigError(f"{where}.{key}: {exc}", (*path, key)) from None

    @property
    def refill_s(self) -> float:
        """Seconds an empty bucket takes to be full again (a bucket idle this long can be forgotten)."""
        return self.burst / self.requests_per_second


class _Bucket:
    """One principal's state: tokens left as of ``last``, and its open streams."""

    __slots__ = ("burst", "last", "max_streams", "rate", "streams", "tokens")

    def __init__(self, spec: RateLimitSpec, now: float) -> None:
        self.rate = float(spec.requests_per_second)
        self.burst = float(spec.burst)
        self.max_streams = spec.max_streams
        self.tokens = self.burst
        self.last = now
        self.streams = 0

    def refill(self, now: float) -> float:
        tokens = self.tokens + (now - self.last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.tokens = tokens
        self.last = now
        return tokens


class _OpenStream:
    """``with limiter.open_stream(name):`` holds one of the principal's stream places until the block ends."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: _Bucket | None) -> None:
        self._bucket = bucket

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        bucket = self._bucket
        if bucket is not None:
            self._bucket = None
            bucket.streams -= 1


_UNLIMITED_STREAM = _OpenStream(None)


class RateLimiter:
    """Token buckets and stream counts per principal name (see the module docstring)."""

    def __init__(
        self,
        default: RateLimitSpec | None = None,
        per_principal: Mapping[str, RateLimitSpec | None] | None = None,
        anonymous: RateLimitSpec | None = None,
        *,
        clock: Clock = time.monotonic,
        anonymous_name: str = ANONYMOUS,
    ) -> None:
        self.default = default
        self.per_principal: dict[str, RateLimitSpec | None] = dict(per_principal or {})
        self.anonymous = anonymous if anonymous is not None else default
        self.anonymous_name = anonymous_name
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._unlimited: set[str] = {name for name, spec in self.per_principal.items() if spec is None}
        self._next_sweep = clock() + SWEEP_INTERVAL_S
        self._sweep_size = MIN_SWEEP_SIZE
        #: calls and streams refused so far
        self.refused = 0

    @classmethod
    def parse(cls, raw: Any, *, clock: Clock = time.monotonic) -> RateLimiter | None:
        """From the auth config's ``rate_limits`` mapping (None or empty = no limits, no limiter)."""
        path = ("rate_limits",)
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise RateLimitConfigError("rate_limits must be a mapping with default, principals and anonymous", path)
        unknown = sorted(str(k) for k in raw if k not in ("default", "principals", "anonymous"))
        if unknown:
            raise RateLimitConfigError(
                f"rate_limits: unknown key {unknown[0]!r} (expected default, principals, anonymous)",
                (*path, unknown[0]),
            )
        default = _optional_spec(raw.get("default"), (*path, "default"))
        anonymous = _optional_spec(raw.get("anonymous"), (*path, "anonymous"))
        principals = raw.get("principals") or {}
        if not isinstance(principals, Mapping):
            raise RateLimitConfigError(
                "rate_limits.principals must map principal names to limits", (*path, "principals")
            )
        per_principal: dict[str, RateLimitSpec | None] = {}
        for name, spec in principals.items():
            if not isinstance(name, str) or not name:
                raise RateLimitConfigError(
                    f"rate_limits.principals: {name!r} is not a principal name", (*path, "principals", str(name))
                )
            per_principal[name] = _optional_spec(spec, (*path, "principals", name))
        if default is None and anonymous is None and not any(per_principal.values()):
            return None
        return cls(default, per_principal, anonymous, clock=clock)

    def spec_for(self, name: str) -> RateLimitSpec | None:
        """The limits that apply to ``name`` (None = unlimited)."""
        if name in self.per_principal:
            return self.per_principal[name]
        if name == self.anonymous_name:
            return self.anonymous
        return self.default

    def _bucket(self, name: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(name)
        if bucket is not None:
            return bucket
        if name in self._unlimited:
            return None
        spec = self.spec_for(name)
        if spec is None:
            return None
        if now >= self._next_sweep or len(self._buckets) >= self._sweep_size:
            self.sweep(now)
        bucket = self._buckets[name] = _Bucket(spec, now)
        return bucket

    def admit(self, name: str) -> float | None:
        """Take a token for one call of ``name``: None if it may go ahead, else the seconds until a token."""
        now = self._clock()
        bucket = self._bucket(name, now)
        if bucket is None:
            return None
        tokens = bucket.refill(now)
        if tokens > 1.0 - _EPSILON:
            bucket.tokens = tokens - 1.0
            return None
        self.refused += 1
        return (1.0 - tokens) / bucket.rate

    def open_stream(self, name: str) -> _OpenStream:
        """Hold one of ``name``'s stream places for a ``with`` block; ResourceExhausted when all are taken.

        Raises on the call, not on ``__enter__``, so ``with limiter.open_stream(name):`` fails before the block."""
        now = self._clock()
        bucket = self._bucket(name, now)
        if bucket is None or bucket.max_streams is None:
            return _UNLIMITED_STREAM
        if bucket.streams >= bucket.max_streams:
            self.refused += 1
            raise ResourceExhausted(
                f"principal {name!r} already has {bucket.streams} open stream(s), its limit (max_streams); "
                "close one before opening another"
            )
        bucket.streams += 1
        return _OpenStream(bucket)

    async def pace(self, name: str) -> None:
        """Take a token for one message of a stream, waiting for it rather than failing.

        The token is reserved at once (the bucket may go below zero), so concurrent streams of one principal
        are served in arrival order and each waits exactly as long as its place in the queue needs."""
        now = self._clock()
        bucket = self._bucket(name, now)
        if bucket is None:
            return
        tokens = bucket.refill(now) - 1.0
        bucket.tokens = tokens
        if tokens < 0:
            await asyncio.sleep(-tokens / bucket.rate)

    def sweep(self, now: float | None = None) -> int:
        """Drop the buckets that are full again and hold no stream (they behave as new ones); returns how many."""
        if now is None:
            now = self._clock()
        idle = [
            name
            for name, bucket in self._buckets.items()
            if bucket.streams == 0 and bucket.tokens + (now - bucket.last) * bucket.rate >= bucket.burst
        ]
        for name in idle:
            del self._buckets[name]
        self._next_sweep = now + SWEEP_INTERVAL_S
        self._sweep_size = max(MIN_SWEEP_SIZE, 2 * len(self._buckets))
        return len(idle)

    @property
    def tracked(self) -> int:
        """Principals with a bucket now (for tests: memory stays bounded)."""
        return len(self._buckets)


def _optional_spec(raw: Any, path: tuple[str, ...]) -> RateLimitSpec | None:
    """``null`` (for a principal: not limited) or a spec."""
    return None if raw is None else RateLimitSpec.parse(raw, path)
