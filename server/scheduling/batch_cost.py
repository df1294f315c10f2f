"""Which batch sizes pay: learns the engine's time per row by batch size and caps batches where bigger
stops paying.

On a GPU, or for a tiny model, per-row time falls as batches grow and nothing is capped. A
compute-bound model on CPU can get *slower* per row in big batches (measured here: the example encoder
runs ~10.7 ms/row at 8 rows and ~13.7 at 32), so batching would lose throughput; the tuner then caps
batches at the best size seen. Sizes are grouped in power-of-two buckets (1, 2–3, 4–7, …).

**Exploring.** Now and then a batch is given another cap (1, 3, 7, 15, … by turns, the largest being
no cap), so sizes other than the usual keep being measured. That happens every ``explore_every``-th
batch, *or* once ``explore_interval`` seconds have passed (at most one batch in ``MIN_BATCHES_BETWEEN``):
counting batches alone left a slow model unexplored for minutes (measured: the encoder's 8-row
requests at concurrency 32 ran in 32-row batches, 2.75 a second, one exploration every ~12 s, and it
never learned that 8-row batches were cheaper per row — 0.89× batching off). Exploring only the bucket
just below where batches run was tried and dropped: on the MLP every exploration then cut a batch
short, which the window policy took as the size a window gathers, and batches shrank (measured: 5.6
instead of 6.3 rows per call, ~5 % fewer requests/s).

**Knowing a size.** A bucket counts once it has ``min_samples`` samples, or ``SLOW_MIN_SAMPLES`` when
its batches take over ``SLOW_BATCH_NS`` each: scheduling noise (tens to hundreds of µs) is then small
against the call. A larger bucket counts as dearer only when it costs ``margin`` more per row *and* its
extra time per batch is beyond ``jitter_ns``: a tiny model's call (tens of µs, run on the event loop)
that gRPC's own thread preempts looks twice as dear per row, and capping on that noise capped the MLP at
1–3 rows under load (measured: 3-row batches and 0.74× the floor, where uncapped it formed 6.5-row
batches at 0.87×).

**Outliers.** Noise only ever adds time (the loop thread preempted, a collection, a page fault), so a
sample counts for at most ``OUTLIER_FACTOR`` times its bucket's estimate: one 2 ms hiccup in a 40 µs
call used to lift its bucket's per-row cost far enough to cap batches, while a sustained change still
moves the estimate (by up to a fifth of it per sample). Measured before: a server under steady load
capped the MLP at 3 rows after minutes and served ~15 % less.

**Exploring upwards from a cap.** A cap below the largest size also bounds what the window waits for,
so an exploration of a larger size found at most the cap's rows queued and measured nothing new: once
capped, a server could never learn that bigger batches pay again (measured: stuck at 3-row batches).
:meth:`BatchCostTuner.peek` tells the batcher that the next batch explores upwards, and the batcher
then holds the queue until it holds more rows than the cap (at most the window), so that the batch
lands in a bucket above it (server/scheduling/batcher.py).

**A cap of one row.** With the cap at one row every request "fills" its batch, so the window policy never
holds one, and an engine call made on the event loop is over before the next request is read: the queue
stays empty, every request takes the batcher's fast path, and nothing asked the tuner again — neither
exploring nor the cap's own updates (the same for requests of at least the cap's rows each). Such a
request now asks :meth:`BatchCostTuner.explores_above`, and once per ``explore_interval`` goes through the
queue, where the batch after it explores upwards as above.
"""

from __future__ import annotations

#: Extra engine time per batch (ns) below which a larger batch is not called dearer.
JITTER_NS = 250_000
#: A bucket whose batches take at least this long (ns) is known after SLOW_MIN_SAMPLES samples.
SLOW_BATCH_NS = 10_000_000
SLOW_MIN_SAMPLES = 3
#: Seconds after which the next batch explores, however few batches ran since the last exploration ...
EXPLORE_INTERVAL = 1.0
#: ... but never more often than one batch in this many.
MIN_BATCHES_BETWEEN = 4
#: A sample counts for at most this many times its bucket's estimate (noise only adds time).
OUTLIER_FACTOR = 2.0


class BatchCostTuner:
    """Caps batch sizes where per-row engine time stops falling (see the module docstring)."""

    def __init__(
        self,
        max_rows: int,
        *,
        min_samples: int = 8,
        explore_every: int = 32,
        explore_interval: float = EXPLORE_INTERVAL,
        margin: float = 0.05,
        jitter_ns: int = JITTER_NS,
    ) -> None:
        self.max_rows = max_rows
        self.min_samples = min_samples
        self.explore_every = explore_every
        self.explore_interval = explore_interval
        self.margin = margin
        self.jitter_ns = jitter_ns
        self._cost: dict[int, float] = {}  # bucket → moving average of ns per row
        self._samples: dict[int, int] = {}
        self._cap = max_rows
        self._stale = False
        self._since_explored = 0  # batches since the last exploration
        self._explored_at: float | None = None  # when it was (None: not yet; the first batch starts the clock)
        self._explore_next = False  # a lone request queued for an upward exploration (explores_above)
        self._explore_caps = [min(max_rows, (1 << b) - 1) for b in range(1, self.bucket(max_rows) + 1)]
        self._explored = 0

    @staticmethod
    def bucket(rows: int) -> int:
        return max(1, rows).bit_length()

    def record(self, rows: int, compute_ns: int) -> None:
        """One engine call's time for a batch of ``rows`` (on every lone request's path: kept lean)."""
        if rows <= 0:
            return
        b = rows.bit_length()
        per_row = compute_ns / rows
        samples = self._samples
        seen = samples.get(b, 0)
        if seen:
            cost = self._cost[b]
            if per_row > cost * OUTLIER_FACTOR:
                per_row = cost * OUTLIER_FACTOR
            self._cost[b] = cost + (per_row - cost) * 0.2
        else:
            self._cost[b] = per_row
        samples[b] = seen + 1
        self._stale = True  # the cap is worked out when next read (the fast path records, never reads)

    def known(self, bucket: int) -> bool:
        """Whether ``bucket`` has been measured often enough to be compared."""
        samples = self._samples.get(bucket, 0)
        if samples >= self.min_samples:
            return True
        # the bucket's smallest batch: its per-row cost times its fewest rows
        return samples >= SLOW_MIN_SAMPLES and self._cost[bucket] * (1 << (bucket - 1)) >= SLOW_BATCH_NS

    def _current_cap(self) -> int:
        if self._stale:
            self._stale = False
            self._cap = self._compute_cap()
        return self._cap

    def _compute_cap(self) -> int:
        known = {b: c for b, c in self._cost.items() if self.known(b)}
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

    def _due(self, batches: int, now: float) -> bool:
        """Whether the batch taken at ``now``, ``batches`` batches after the last exploration, explores."""
        if self._explore_next:
            return True
        started = now if self._explored_at is None else self._explored_at
        return batches >= self.explore_every or (
            batches >= MIN_BATCHES_BETWEEN and now - started >= self.explore_interval
        )

    def peek(self, now: float = 0.0) -> int:
        """What :meth:`cap` would answer for a batch taken at ``now``, without taking it."""
        if self._due(self._since_explored + 1, now):
            return self._explore_caps[(self._explored + 1) % len(self._explore_caps)]
        return self._current_cap()

    def explores_above(self, cap: int, now: float) -> bool:
        """For a request that fills a batch capped at ``cap`` rows by itself (no window holds it; it would
        run alone at once): whether it should queue instead, because an exploration above the cap is due.
        At most once per ``explore_interval``: lone calls are not batches the count rule sees, and an
        upward exploration can hold a lone caller for the window (see "A cap of one row" above)."""
        started = self._explored_at
        if started is None:
            self._explored_at = now
            return False
        caps = self._explore_caps
        if now - started < self.explore_interval or caps[-1] <= cap:
            return False
        while caps[(self._explored + 1) % len(caps)] <= cap:
            self._explored += 1  # the turns that would not go above the cap
        self._explore_next = True
        return True

    def cap(self, now: float = 0.0) -> int:
        """Most rows for the next batch taken at ``now`` (seconds, any monotonic clock); now and then
        another size, to keep measuring the others."""
        self._since_explored += 1
        if self._explored_at is None:
            self._explored_at = now
        if not self._due(self._since_explored, now):
            return self._current_cap()
        self._since_explored = 0
        self._explore_next = False
        self._explored_at = now
        self._explored += 1
        return self._explore_caps[self._explored % len(self._explore_caps)]
