"""OIP ModelStatistics in Triton's message format, read from the same per-version counters as inferd.v1's.

What maps how (docs/protocol.md, "Open Inference Protocol v2"): ``inference_count`` is rows run,
``execution_count`` engine calls; ``success``/``fail`` count calls by outcome, their ``ns`` the summed
durations of unary calls (a stream's length follows its reader, so streams add a count and no time);
``queue`` counts requests that reached the batcher and their waits; ``compute_infer`` counts engine calls
(not requests, as Triton does) and their time; ``compute_input``/``compute_output``, the cache and the
per-response statistics are not tracked and stay zero.
"""

from __future__ import annotations

from typing import Any

from inferd.oip.v2 import grpc_service_pb2 as pb
from server.api.oip.metadata import parse_version
from server.core.echo import echo, listing
from server.core.errors import NotFound
from server.models.registry import Registry
from server.models.slot import Slot


def version_statistics(slot: Slot) -> Any:
    stats = slot.stats
    failed = sum(stats.failed.values())
    return pb.ModelStatistics(
        name=slot.model,
        version=str(slot.version),
        last_inference=stats.last_inference_ns // 1_000_000,
        inference_count=stats.rows,
        execution_count=stats.batches,
        inference_stats=pb.InferStatistics(
            success=pb.StatisticDuration(count=stats.success, ns=stats.success_ns),
            # every timed call is in request_duration; the successes among them in success_ns
            fail=pb.StatisticDuration(count=failed, ns=max(0, stats.request_duration.sum - stats.success_ns)),
            queue=pb.StatisticDuration(count=stats.queue_duration.count, ns=stats.queue_ns),
            compute_input=pb.StatisticDuration(),
            compute_infer=pb.StatisticDuration(count=stats.batches, ns=stats.compute_ns),
            compute_output=pb.StatisticDuration(),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=pb.StatisticDuration(),
                compute_infer=pb.StatisticDuration(count=count, ns=stats.batch_compute_ns.get(size, 0)),
                compute_output=pb.StatisticDuration(),
            )
            for size, count in sorted(stats.batch_sizes.items())
        ],
    )


def model_statistics(registry: Registry, name: str, version: str) -> Any:
    """One ModelStatistics per READY version; "" name = every model, "" version = every version."""
    wanted = parse_version(version)
    entries = [registry.entry(name)] if name else registry.models()
    response = pb.ModelStatisticsResponse()
    for entry in entries:
        ready = entry.ready_versions()
        if name and wanted is not None and wanted not in ready:
            state = f" is {entry.slots[wanted].state.value}" if wanted in entry.slots else " not found"
            raise NotFound(
                f"model {echo(entry.name)} version {wanted}{state} (READY versions: {listing(sorted(ready), 8)})"
            )
        for v in sorted(ready):
            if wanted is None or v == wanted:
                response.model_stats.append(version_statistics(entry.slots[v]))
    return response
