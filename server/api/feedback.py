"""InferenceService.Feedback: the truth for an earlier Predict, scored for every version that answered it.

Unknown and expired ids are answered OK with that outcome (and counted per model): a client delivering
labels days later cannot know which ids the server still remembers. A malformed target is INVALID_ARGUMENT
naming the tensor, and leaves the record in place for a corrected one. An id is scored once: a second
feedback for it is ALREADY_EXISTS (a retry after a lost reply is thus told its first delivery counted).
"""

from __future__ import annotations

import grpc

from inferd.tensors import TensorError, to_numpy
from inferd.v1 import inference_pb2
from server.core.echo import echo
from server.core.errors import FailedPrecondition, InvalidArgument, ServingError
from server.models.registry import Registry
from server.quality.feedback import FeedbackBook, check_target
from server.quality.predictions import Lookup

Outcome = inference_pb2.FeedbackResponse.Outcome


class AlreadyScored(ServingError):
    code = grpc.StatusCode.ALREADY_EXISTS


def feedback(
    registry: Registry, book: FeedbackBook, request: inference_pb2.FeedbackRequest
) -> inference_pb2.FeedbackResponse:
    entry = registry.entry(request.model_name)  # NotFound for a model the server does not know
    policy = entry.spec.feedback if entry.spec is not None else None
    if policy is None:
        raise FailedPrecondition(
            f"model '{entry.name}' has no feedback policy (add `feedback {{}}` to its config.pbtxt)"
        )
    if not request.request_id:
        raise InvalidArgument("request_id is empty: give the PredictResponse.id of the prediction being scored")
    if not request.HasField("target"):
        raise InvalidArgument("target is missing: give the true class indices (INT64) or values (FP32)")
    name = (request.target.name or "target")[:64]
    try:
        target = to_numpy(request.target)
    except TensorError as exc:
        raise InvalidArgument(f"target tensor '{name}': {exc}") from None
    lookup, record = book.take(entry.name, policy, request.request_id)
    shown = echo(request.request_id)
    if lookup is Lookup.SCORED:
        raise AlreadyScored(f"request id {shown} of model '{entry.name}' was already scored; an id is scored once")
    if lookup is Lookup.EXPIRED:
        return inference_pb2.FeedbackResponse(
            outcome=Outcome.OUTCOME_EXPIRED,
            message=f"the prediction {shown} is older than model '{entry.name}''s ttl_seconds ({policy.ttl_seconds})",
        )
    if record is None:
        return inference_pb2.FeedbackResponse(
            outcome=Outcome.OUTCOME_UNKNOWN_ID,
            message=f"no recorded prediction of model '{entry.name}' has id {shown} "
            f"(never made, or evicted: the store keeps the last {policy.max_records})",
        )
    try:
        checked = {v: check_target(policy.kind, name, rows, target) for v, rows in record.rows.items()}
    except InvalidArgument:
        book.restore(entry.name, policy, request.request_id, record)
        raise
    scored: list[int] = []
    for version, truth in sorted(checked.items()):
        slot = entry.slots.get(version)
        if slot is None or slot.feedback is None:
            continue  # the version was unloaded or reloaded since it predicted: nothing left to score
        slot.feedback.add(record.rows[version], truth)
        scored.append(version)
    return inference_pb2.FeedbackResponse(
        outcome=Outcome.OUTCOME_SCORED,
        scored_versions=scored,
        message=f"scored {len(target)} rows for version(s) {', '.join(map(str, scored)) or 'none still loaded'}",
    )
