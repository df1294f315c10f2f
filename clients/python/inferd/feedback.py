"""Feedback: the true target of an earlier prediction, sent minutes or days later (docs/quality.md#feedback)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

FeedbackOutcome = Literal["scored", "unknown_id", "expired", "unspecified"]
_OUTCOMES: dict[int, FeedbackOutcome] = {
    inference_pb2.FeedbackResponse.OUTCOME_SCORED: "scored",
    inference_pb2.FeedbackResponse.OUTCOME_UNKNOWN_ID: "unknown_id",
    inference_pb2.FeedbackResponse.OUTCOME_EXPIRED: "expired",
}


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What became of one feedback: ``outcome`` and, when scored, the versions scored."""

    outcome: FeedbackOutcome
    scored_versions: tuple[int, ...]
    message: str

    @property
    def scored(self) -> bool:
        return self.outcome == "scored"


def build_feedback_request(model: str, request_id: str, target: Any) -> inference_pb2.FeedbackRequest:
    """Class indices become INT64 and values FP32, as the server expects (a list of ints or floats is fine)."""
    array = np.asarray(target)
    if array.dtype.kind in "iub":
        array = array.astype(np.int64)
    elif array.dtype.kind == "f":
        array = array.astype(np.float32)
    return inference_pb2.FeedbackRequest(model_name=model, request_id=request_id, target=from_numpy("target", array))


def to_feedback_result(response: inference_pb2.FeedbackResponse) -> FeedbackResult:
    return FeedbackResult(
        outcome=_OUTCOMES.get(response.outcome, "unspecified"),
        scored_versions=tuple(response.scored_versions),
        message=response.message,
    )
