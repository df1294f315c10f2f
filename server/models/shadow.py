"""Shadow traffic: mirror a request to a challenger version and record how its answer agrees.

The mirror runs as a background task after the primary answer is ready, so it never delays or changes
what the caller gets; at most ``max_in_flight`` mirrors run at once and the rest are dropped (counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import numpy as np

from server.models.slot import Slot
from server.quality.feedback import FeedbackBook

log = logging.getLogger("inferd.shadow")


class ShadowMirror:
    def __init__(self, max_in_flight: int = 16) -> None:
        self.max_in_flight = max_in_flight
        #: where a shadow's answer is recorded for Feedback scoring (set by the InferenceServicer); None = nowhere
        self.feedback: FeedbackBook | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def mirror(
        self,
        shadow: Slot,
        primary_version: int,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        primary_outputs: Mapping[str, np.ndarray],
        request_id: str = "",
    ) -> None:
        if len(self._tasks) >= self.max_in_flight:
            for name in primary_outputs:
                shadow.stats.agreement(primary_version, name).dropped += 1
            return
        task = asyncio.get_running_loop().create_task(
            self._run(shadow, primary_version, inputs, rows, primary_outputs, request_id)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        shadow: Slot,
        primary_version: int,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        primary_outputs: Mapping[str, np.ndarray],
        request_id: str = "",
    ) -> None:
        try:
            outputs = await shadow.infer(inputs, None, rows)
        except Exception as exc:
            log.debug("shadow %s v%d failed: %s", shadow.model, shadow.version, exc)
            for name in primary_outputs:
                shadow.stats.agreement(primary_version, name).errors += 1
            return
        for name, primary in primary_outputs.items():
            agreement = shadow.stats.agreement(primary_version, name)
            if name not in outputs:
                agreement.errors += 1
            else:
                agreement.add(np.asarray(primary), np.asarray(outputs[name]))
        policy = shadow.spec.feedback
        if self.feedback is not None and policy is not None and request_id:
            # the challenger is scored on the same truth as the primary: same request id, its own version
            self.feedback.record(shadow.model, policy, request_id, shadow.version, outputs)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
