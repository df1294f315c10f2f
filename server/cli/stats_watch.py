"""``inferd stats --watch``: a live table of every model version, redrawn from ModelStatistics (SDK only).

For an incident, without opening Grafana: what each version serves per second now, its p50/p99 over
the last interval, its queue, batch sizes and errors by code. Every figure but the gauges (queue
depth, streams) is the difference between two polls, as Prometheus' ``rate()`` computes it; a counter
that went down means the version was reloaded, and its values then count from zero.

On a terminal each frame replaces the last (ANSI clear screen); piped, frames follow one another, so
``inferd stats --watch 1 --count 10 > log`` records ten of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.cli.client import bound_ms, table_lines
from server.cli.connect import connect

#: home the cursor and clear the screen
CLEAR_SCREEN = "\x1b[H\x1b[2J"
COLUMNS = ("MODEL", "VERSION", "ENGINE", "REQ/S", "P50 ms≤", "P99 ms≤", "QUEUE", "ROWS/BATCH", "TOK/S", "STREAMS")

DEFAULT_INTERVAL_S = 2.0
MIN_INTERVAL_S = 0.1

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Bucket:
    """One latency bucket (the shape inferd.statistics.latency_quantile reads)."""

    le_microseconds: float
    count: int


@dataclass(frozen=True, slots=True)
class Sample:
    """What one poll said about one version: counters (compared between polls) and gauges (shown as is)."""

    engine: str
    success: int
    failures: Mapping[str, int]
    latency: tuple[Bucket, ...]
    rows: int
    executions: int
    tokens: int
    streaming: bool
    queue_depth: int
    active_streams: int
    waiting_streams: int

    @property
    def requests(self) -> int:
        return self.success + sum(self.failures.values())


def sample_of(stats: Any) -> Sample:
    """A VersionStatistics message as a :class:`Sample`."""
    streaming = stats.streaming
    return Sample(
        engine=stats.engine or "-",
        success=stats.success_count,
        failures=dict(stats.failure_count),
        latency=tuple(Bucket(b.le_microseconds, b.count) for b in stats.latency_buckets),
        rows=stats.inference_count,
        executions=stats.execution_count,
        tokens=streaming.generated_tokens,
        streaming=bool(streaming.streams_started or streaming.streams_rejected or streaming.active_streams),
        queue_depth=stats.queue_depth,
        active_streams=streaming.active_streams,
        waiting_streams=streaming.waiting_streams,
    )


def _reloaded(now: Sample, before: Sample) -> bool:
    return now.requests < before.requests or now.executions < before.executions or now.tokens < before.tokens


def _zero(now: Sample) -> Sample:
    """A version's counters before its first request (for one loaded since the last poll)."""
    empty = tuple(Bucket(b.le_microseconds, 0) for b in now.latency)
    return Sample(now.engine, 0, {}, empty, 0, 0, 0, now.streaming, 0, 0, 0)


def interval_row(key: Key, now: Sample, before: Sample | None, seconds: float) -> tuple[list[str], str]:
    """One table row over the interval, and the version's errors in it ("" when none)."""
    from inferd.statistics import latency_quantile

    if before is None or _reloaded(now, before) or len(before.latency) != len(now.latency):
        before = _zero(now)
    latency = [Bucket(b.le_microseconds, b.count - a.count) for b, a in zip(now.latency, before.latency, strict=True)]
    executions = now.executions - before.executions
    errors = {code: n - before.failures.get(code, 0) for code, n in now.failures.items()}
    errors = {code: n for code, n in sorted(errors.items()) if n > 0}
    name, version = key
    row = [
        name,
        str(version),
        now.engine,
        f"{(now.requests - before.requests) / seconds:.1f}",
        bound_ms(latency_quantile(latency, 0.5)),
        bound_ms(latency_quantile(latency, 0.99)),
        str(now.queue_depth),
        f"{(now.rows - before.rows) / executions:.1f}" if executions else "-",
        f"{(now.tokens - before.tokens) / seconds:.1f}" if now.streaming else "-",
        f"{now.active_streams} active, {now.waiting_streams} waiting" if now.streaming else "-",
    ]
    error_text = ", ".join(f"{code} {n}" for code, n in errors.items())
    return row, f"{name} v{version} errors: {error_text}" if error_text else ""


def render(
    address: str, now: Mapping[Key, Sample], before: Mapping[Key, Sample], seconds: float, clock: str
) -> list[str]:
    """One frame: a header, the table, then each version's errors over the interval."""
    rows: list[Sequence[str]] = [COLUMNS]
    errors: list[str] = []
    for key in sorted(now):
        row, error_line = interval_row(key, now[key], before.get(key), seconds)
        rows.append(row)
        if error_line:
            errors.append(error_line)
    lines = [f"inferd stats {address}  {clock}  over the last {seconds:.1f}s (Ctrl-C to stop)"]
    if len(rows) == 1:
        lines.append("no model versions loaded")
    else:
        lines.extend(table_lines(rows))
    lines.extend(errors)
    return lines


def _show(lines: list[str], tty: bool) -> None:
    text = "\n".join(lines) + "\n"
    sys.stdout.write(CLEAR_SCREEN + text if tty else text + "\n")
    sys.stdout.flush()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be seconds between frames, not {text!r}") from None
    if not value >= MIN_INTERVAL_S:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL_S} seconds, not {text}")
    return value


def _frames(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a number of frames, 1 or more, not {text!r}")
    return int(text)


def add_flags(stats: argparse.ArgumentParser) -> None:
    """``--watch [SECONDS]`` and ``--count N`` on ``inferd stats``."""
    stats.add_argument(
        "--watch",
        type=_seconds,
        nargs="?",
        const=DEFAULT_INTERVAL_S,
        default=None,
        metavar="SECONDS",
        help=f"redraw a live table every SECONDS (default {DEFAULT_INTERVAL_S:g}) until Ctrl-C: requests/s, p50/p99, "
        "queue, batch size and errors over each interval (name the model before --watch)",
    )
    stats.add_argument(
        "--count", type=_frames, default=None, metavar="N", help="with --watch: stop after N frames (for scripts)"
    )


def watch(args: argparse.Namespace) -> int:
    """Poll every ``args.watch`` seconds and draw a frame, ``args.count`` times or until Ctrl-C."""
    from inferd.errors import InferdError

    if args.watch is None:
        raise SystemExit("inferd: --count needs --watch")
    if args.json:
        raise SystemExit("inferd: --watch draws a table; --json prints one reply (use one or the other)")
    interval: float = args.watch
    tty = sys.stdout.isatty()
    with connect(args) as client:

        def poll() -> dict[Key, Sample]:
            return {(s.name, s.version): sample_of(s) for s in client.statistics(args.model, args.version)}

        before, polled = poll(), time.monotonic()  # a wrong address or model fails here, as plain stats does
        next_tick = polled
        drawn = 0
        try:
            while args.count is None or drawn < args.count:
                next_tick += interval
                time.sleep(max(0.0, next_tick - time.monotonic()))
                clock = time.strftime("%H:%M:%S")
                try:
                    now = poll()
                except InferdError as exc:  # the server restarting: say so and keep watching
                    _show([f"inferd stats {args.address}  {clock}  cannot read statistics: {exc}"], tty)
                else:
                    now_polled = time.monotonic()
                    _show(render(args.address, now, before, now_polled - polled, clock), tty)
                    before, polled = now, now_polled
                drawn += 1
        except KeyboardInterrupt:
            print()
    return 0
