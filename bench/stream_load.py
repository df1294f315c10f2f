"""A closed-loop load on one bidirectional stream: ``--in-flight`` requests outstanding, for ``--seconds``.

h2load cannot drive a bidirectional gRPC stream, so this client (grpc.aio, pre-serialised request bytes,
responses counted, not parsed) does. It prints one JSON line: responses/s, errors (responses with an
``error_message``, found without parsing: field 1 comes first) and the p50/p99 of each request's time in
flight. Pin it to its own core (bench/oip.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np

STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"


async def drive(address: str, message: bytes, in_flight: int, seconds: float, warmup: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(STREAM_PATH)()
        room = asyncio.Semaphore(in_flight)
        sent: list[float] = []  # send times, answered in completion order: latency is approximate per request
        stop = asyncio.Event()

        async def write() -> None:
            while not stop.is_set():
                await room.acquire()
                sent.append(time.perf_counter())
                await call.write(message)
            await call.done_writing()

        writer = asyncio.get_running_loop().create_task(write())
        latencies: list[float] = []
        answered = errors = 0
        start = time.perf_counter() + warmup
        end = start + seconds
        counted_from = 0
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                break
            now = time.perf_counter()
            index = answered
            answered += 1
            room.release()
            if now < start:
                counted_from = answered
                continue
            if now >= end:
                stop.set()
                continue
            if reply[:1] == b"\x0a":  # error_message (field 1) set
                errors += 1
            latencies.append(now - sent[index])
        await writer
    counted = len(latencies)
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    del counted_from
    return {
        "requests": counted,
        "errors": errors,
        "seconds": seconds,
        "req_per_s": counted / seconds,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--message", type=Path, required=True, help="a serialised ModelInferRequest")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    result = asyncio.run(drive(args.address, args.message.read_bytes(), args.in_flight, args.seconds, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
