"""The two HTTP/2 connection patterns every h2load cell is measured with.

``many``: C connections × 1 stream each — what real clients and load balancers open, and the pattern the
issue's targets are quoted for. ``one``: 1 connection × C streams — one multiplexed client. A server's
per-connection cost differs between them, so ratios (× floor, × peer) are only taken within a pattern.
"""

from __future__ import annotations

PATTERNS = ("many", "one")


def parse_patterns(text: str) -> tuple[str, ...]:
    """``--connections many,one`` → ("many", "one"); an unknown name is an argparse-style error."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in PATTERNS]
    if unknown or not names:
        raise ValueError(f"--connections takes a comma list of {', '.join(PATTERNS)}; got {text!r}")
    return names


def connections(pattern: str, concurrency: int) -> int:
    """How many HTTP/2 connections carry ``concurrency`` streams in ``pattern`` (h2load's -c)."""
    if pattern == "many":
        return max(1, concurrency)
    if pattern == "one":
        return 1
    raise ValueError(f"unknown connection pattern {pattern!r}")


def label(pattern: str, concurrency: int) -> str:
    """For report columns: "32 conns × 1 stream" or "1 conn × 32 streams"."""
    if pattern == "many":
        return f"{concurrency} conn{'s' if concurrency != 1 else ''} × 1 stream"
    return f"1 conn × {concurrency} stream{'s' if concurrency != 1 else ''}"


def measured(patterns: tuple[str, ...], concurrency: int) -> tuple[str, ...]:
    """The patterns that differ at ``concurrency``: at 1 both are one connection with one stream, so that
    cell is measured once and reported under each pattern (a sixth of a run saved)."""
    return patterns[:1] if concurrency == 1 else patterns


def source(pattern: str, patterns: tuple[str, ...], concurrency: int) -> str:
    """Which measured pattern's points stand for ``pattern`` at ``concurrency``."""
    chosen = measured(patterns, concurrency)
    return pattern if pattern in chosen else chosen[0]
