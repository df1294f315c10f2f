"""When to hold a queue for a fuller batch: never, always (a fixed window), or adaptively.

Measured here: a grpc.aio server hands requests to Python one after another, so with a fast engine a
queue never holds more than one request and batches only form if the server waits. Waiting costs a
lone caller the whole window, so the default ``adaptive`` policy waits only while waiting has been
paying off:

* eager until a probe: every ``probe_interval``, and only while requests arrive close enough together
  that at least two could land inside one window, the head request is held for a few typical
  inter-arrival gaps (never more than the window) to see whether others come; sparse traffic is never
  held. (Asking for more arrivals per window trapped a saturated server: its arrival gap is its own
  service time, so a server slow enough never probed, never batched, and stayed slow.)
* if other requests joined it, the policy keeps windowing, dispatching as soon as the batch reaches the
  size the last full window gathered (so it does not sit out the window when those rows are there),
  and tries one row more after 16 batches in a row filled early;
* three windows in a row that gather a single request switch back to eager.

So a caller alone pays a few arrival gaps once per probe interval, and a loaded server forms batches.
"""

from __future__ import annotations

from typing import Literal

PolicyKind = Literal["eager", "always", "adaptive"]

#: A probe holds the head request this many typical arrival gaps, and at least PROBE_MIN_HOLD seconds.
PROBE_GAPS = 4.0
#: Probes only happen while this many arrivals are expected within one window.
PROBE_ARRIVALS = 2.0
PROBE_MIN_HOLD = 50e-6
#: Windowing stops after this many windows in a row that gathered a single request.
LONELY_WINDOWS_TO_STOP = 3
#: After this many batches in a row reach the expected size early, the expected size grows by one.
EARLY_FILLS_TO_GROW = 16
#: Extra engine time per batch (ns) below which a larger batch is not called dearer (BatchCostTuner).
JITTER_NS = 250_000


class WindowPolicy:
    def __init__(
        self,
        kind: PolicyKind,
        window: float,
        max_rows: int,
        preferred: tuple[int, ...] = (),
        probe_interval: float = 0.25,
    ) -> None:
        self.kind: PolicyKind = kind if window > 0 else "eager"
        self.window = window
        self.max_rows = max_rows
        self.preferred = preferred
        self.largest_preferred = max(preferred, default=0)
        self.probe_interval = probe_interval
        self.windowing = False
        self.expected_rows = 2.0
        self._next_probe = -1.0  # set at the first arrival: no probe before traffic has a rhythm
        self._waited = False
        self._gap = 0.0
        self._last_arrival = 0.0
        self._lonely = 0
        self._early = 0

    def note_arrival(self, now: float) -> None:
        """Track the typical gap between arrivals (a moving average) to size probes."""
        if self._next_probe < 0:
            self._next_probe = now + self.probe_interval
        elif self._last_arrival:
            self._gap += (min(now - self._last_arrival, self.window) - self._gap) * 0.1
        self._last_arrival = now

    def _full(self, rows: int) -> bool:
        if rows >= self.max_rows:
            return True
        return bool(self.largest_preferred) and (rows >= self.largest_preferred or rows in self.preferred)

    def decide(self, rows: int, head_enqueued: float, now: float) -> float:
        """Seconds to keep holding the queue whose oldest request arrived at ``head_enqueued``; 0 = go."""
        if self.kind == "eager" or self._full(rows):
            return 0.0
        remaining = head_enqueued + self.window - now
        if remaining <= 0:
            return 0.0
        if self.kind == "always":
            self._waited = True
            return remaining
        if self.windowing:
            self._waited = True
            return 0.0 if rows >= max(2, round(self.expected_rows)) else remaining
        if 0 <= self._next_probe <= now and PROBE_ARRIVALS * self._gap <= self.window:
            # only probe when arrivals are close enough that another could land inside the window
            probe_left = head_enqueued + max(PROBE_MIN_HOLD, PROBE_GAPS * self._gap) - now
            if probe_left > 0:
                self._waited = True
                return min(remaining, probe_left)
            self._waited = True  # the probe ended: let observe() judge it
        return 0.0

    def observe(self, rows: int, now: float, window_expired: bool, requests: int | None = None) -> None:
        """Learn from a dispatched batch of ``rows`` rows from ``requests`` requests (default: one per row).

        A window pays off only when it gathered more than one *request*: a lone request of several rows
        is lonely too (counting its rows would keep the policy windowing, and every window grown past
        that request's rows would make it wait the whole window for nobody)."""
        waited, self._waited = self._waited, False
        if self.kind != "adaptive" or not waited:
            return
        if (rows if requests is None else requests) < 2:
            self._lonely += 1
            if not self.windowing or self._lonely >= LONELY_WINDOWS_TO_STOP:
                self.windowing = False
                self._next_probe = now + self.probe_interval
            return
        self._lonely = 0
        self.windowing = True
        if window_expired:
            self.expected_rows = float(rows)  # what a whole window gathers: aim for that
            self._early = 0
            return
        self._early += 1
        if self._early >= EARLY_FILLS_TO_GROW:
            # batches keep filling before the window ends: try one row more (a wasted window if not)
            self._early = 0
            self.expected_rows = min(float(self.max_rows), max(self.expected_rows, float(rows)) + 1.0)


class BatchCostTuner:
    """Learns the engine's time per row by batch size and caps batches where bigger stops paying.

    On a GPU, or for a tiny model, per-row time falls as batches grow and nothing is capped. A
    compute-bound model on CPU can get *slower* per row in big batches (measured here: the example
    encoder runs 10.5 ms/row at batch 1, 9.8 at 4, 11.9 at 32), so batching would lose throughput;
    the tuner then caps batches at the best size seen. Sizes are grouped in power-of-two buckets
    (1, 2–3, 4–7, …); every ``explore_every``-th batch is uncapped so larger sizes keep being measured.

    A larger bucket counts as dearer only when it costs ``margin`` more per row *and* its extra time per
    batch is beyond ``jitter_ns``: a tiny model's call (tens of µs, run on the event loop) that gRPC's
    own thread preempts for a few tens of µs looks twice as dear per row, and capping on that noise
    capped the MLP at 1–3 rows under load (measured: 3-row batches and 0.74× the floor, where uncapped
    it formed 6.5-row batches at 0.87×).
    """

    def __init__(
        self,
        max_rows: int,
        *,
        min_samples: int = 8,
        explore_every: int = 32,
        margin: float = 0.05,
        jitter_ns: int = JITTER_NS,
    ) -> None:
        self.max_rows = max_rows
        self.min_samples = min_samples
        self.explore_every = explore_every
        self.margin = margin
        self.jitter_ns = jitter_ns
        self._cost: dict[int, float] = {}  # bucket → moving average of ns per row
        self._samples: dict[int, int] = {}
        self._calls = 0
        self._cap = max_rows
        self._stale = False
        self._explore_caps = [min(max_rows, (1 << b) - 1) for b in range(1, self.bucket(max_rows) + 1)]
        self._explored = 0

    @staticmethod
    def bucket(rows: int) -> int:
        return max(1, rows).bit_length()

    def record(self, rows: int, compute_ns: int) -> None:
        if rows <= 0:
            return
        b = self.bucket(rows)
        per_row = compute_ns / rows
        seen = self._samples.get(b, 0)
        self._cost[b] = per_row if not seen else self._cost[b] + (per_row - self._cost[b]) * 0.2
        self._samples[b] = seen + 1
        self._stale = True  # the cap is worked out when next read (the fast path records, never reads)

    def _current_cap(self) -> int:
        if self._stale:
            self._stale = False
            self._cap = self._compute_cap()
        return self._cap

    def _compute_cap(self) -> int:
        known = {b: c for b, c in self._cost.items() if self._samples[b] >= self.min_samples}
        if len(known) < 2:
            return self.max_rows
        best = min(known, key=known.__getitem__)
        least = known[best]
        worse_above = any(
            b > best and c > least * (1 + self.margin) and (c - least) * (1 << (b - 1)) > self.jitter_ns
            for b, c in known.items()
        )
        return min(self.max_rows, (1 << best) - 1) if worse_above else self.max_rows

    @property
    def steady_cap(self) -> int:
        """The cap without exploration: what a window should wait for at most."""
        return self._current_cap()

    def cap(self) -> int:
        """Most rows for the next batch (now and then another size, to keep measuring the others)."""
        self._calls += 1
        if self._calls % self.explore_every == 0:
            self._explored += 1
            return self._explore_caps[self._explored % len(self._explore_caps)]
        return self._current_cap()
