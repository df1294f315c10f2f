"""CallObservers: a record exists only for calls some observer wants, and never leaks into the next call."""

from __future__ import annotations

import contextvars

from server.telemetry.calls import BatchInfo, CallObservers, CallRecord, StaticCallSource, current_call

SOURCE = StaticCallSource((("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-00"),), "ipv4:10.0.0.1:5000")


class Wants:
    """An observer that wants (or not) every call, and remembers what it saw."""

    def __init__(self, wants: bool) -> None:
        self.wants = wants
        self.ended: list[CallRecord] = []

    def begin(self, record: CallRecord) -> bool:
        return self.wants

    def end(self, record: CallRecord) -> None:
        self.ended.append(record)

    def batch(self, batch: BatchInfo) -> None:
        pass


def test_a_call_no_observer_wants_gets_no_record_and_the_batcher_sees_none() -> None:
    observers = CallObservers([Wants(False)])

    def call() -> tuple[CallRecord | None, CallRecord | None]:
        return observers.begin("Predict", SOURCE, 10), current_call.get()

    record, seen_by_batcher = contextvars.copy_context().run(call)
    assert record is None and seen_by_batcher is None


def test_an_earlier_calls_record_in_the_same_task_is_not_taken_for_the_next_ones() -> None:
    wanting, refusing = CallObservers([Wants(True)]), CallObservers([Wants(False)])

    def two_calls() -> CallRecord | None:
        first = wanting.begin("Predict", SOURCE, 10)
        assert first is not None and current_call.get() is first
        assert refusing.begin("Predict", SOURCE, 10) is None
        return current_call.get()

    assert contextvars.copy_context().run(two_calls) is None


def test_one_wanting_observer_is_enough_and_metadata_is_read_from_the_call() -> None:
    observers = CallObservers([Wants(False), Wants(True)])
    record = contextvars.copy_context().run(observers.begin, "Predict", SOURCE, 10)
    assert record is not None
    assert record.peer == "ipv4:10.0.0.1:5000"
    assert dict(record.metadata)["traceparent"].startswith("00-111")
