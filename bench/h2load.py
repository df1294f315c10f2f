"""Drive a gRPC unary method with h2load (nghttp2-client) and read per-request latencies from its log.

h2load does not read gRPC trailers, so success is checked on the server's own counters
(ModelStatistics) by the caller; HTTP-level failures are counted here.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    http_failures: int
    seconds: float
    req_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


def grpc_frame(message: bytes) -> bytes:
    """A length-prefixed gRPC message: 1 byte compression flag, 4 bytes big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def require_h2load() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise SystemExit("h2load not found: install Debian's nghttp2-client (apt-get install nghttp2-client)")
    return path


def run_h2load(
    url: str,
    message: bytes,
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    cpu: int | None = None,
    headers: tuple[str, ...] = (),
    connections: int = 1,
) -> LoadResult:
    """Closed loop: ``concurrency`` streams in flight for ``seconds`` after ``warmup``, spread over
    ``connections`` HTTP/2 connections (1 = one connection × C streams; C = C connections × 1 stream each).

    ``headers``: extra ``name: value`` request headers (e.g. ``authorization: Bearer …``); an ``https://``
    URL makes h2load negotiate TLS with ALPN h2 (it does not verify the server's certificate)."""
    h2load = require_h2load()
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.bin"
        body.write_bytes(grpc_frame(message))
        log = Path(tmp) / "requests.log"
        command = [
            h2load,
            f"-c{connections}",
            f"-m{max(1, concurrency // connections)}",
            "-t1",
            f"-D{seconds:g}",
            f"--warm-up-time={warmup:g}",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            *(item for header in headers for item in ("-H", header)),
            "--log-file",
            str(log),
            url,
        ]
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + warmup + 60)
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    if not rows:
        raise RuntimeError("h2load logged no requests")
    latencies_us = np.array([int(r[2]) for r in rows], dtype=np.float64)
    failures = sum(1 for r in rows if r[1] != "200")
    return LoadResult(
        requests=len(rows),
        http_failures=failures,
        seconds=seconds,
        req_per_s=len(rows) / seconds,
        p50_ms=float(np.percentile(latencies_us, 50) / 1000),
        p90_ms=float(np.percentile(latencies_us, 90) / 1000),
        p99_ms=float(np.percentile(latencies_us, 99) / 1000),
    )
