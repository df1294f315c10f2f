"""config.pbtxt into a ModelSpec: the streaming bounds are parsed into the spec (so a change to them is a
change of the model), the batching queue is bounded by default, and the batching test hook comes from
the environment, never from the public config."""

from __future__ import annotations

import asyncio

import pytest

from server.core.errors import ResourceExhausted
from server.models.config import ConfigError, ModelSpec, parse_config_text, spec_from_proto
from server.models.test_hooks import HOLD_UNTIL_QUEUED_ENV
from server.scheduling.settings import DEFAULT_MAX_QUEUE_SIZE, BatchingSpec, StreamingSpec
from server.scheduling.stream_admission import Admission
from server.telemetry.stats import StreamCounters
from tests.support import SCALE_CONFIG


def spec_of(extra: str = "", name: str = "m") -> ModelSpec:
    return spec_from_proto(parse_config_text(SCALE_CONFIG + extra, "config.pbtxt"), "config.pbtxt", model_name=name)


def test_streaming_zeros_become_the_defaults():
    assert spec_of().streaming == StreamingSpec(max_active=16, max_waiting=16, max_buffered=16)
    assert spec_of("streaming { max_active_streams: 4 }").streaming.max_waiting == 4


def test_streaming_settings_are_parsed_into_the_spec():
    streaming = spec_of(
        "streaming { chunk_rows: 3 max_active_streams: 2 max_waiting_streams: 5 max_buffered_outputs: 7 "
        "max_step_streams: 1 }"
    ).streaming
    assert streaming == StreamingSpec(max_active=2, max_waiting=5, max_buffered=7, max_step_streams=1, chunk_rows=3)


def test_a_negative_chunk_rows_is_refused():
    with pytest.raises(ConfigError, match=r"streaming\.chunk_rows must be >= 0"):
        spec_of("streaming { chunk_rows: -1 }")


def test_a_change_of_max_active_streams_alone_is_a_change_of_the_model():
    assert spec_of("streaming { max_active_streams: 4 }") != spec_of("streaming { max_active_streams: 1 }")
    assert spec_of("streaming { max_active_streams: 4 }") == spec_of("streaming { max_active_streams: 4 }")


async def test_the_reloaded_bound_is_the_one_admission_enforces():
    """What a version built from the new spec admits: with max_active_streams 1 a second stream waits
    (and, the waiting line being as long, a third is refused) where 4 admitted both at once."""
    roomy = Admission("m", spec_of("streaming { max_active_streams: 4 }").streaming, StreamCounters())
    await roomy.enter(None)
    await asyncio.wait_for(roomy.enter(None), 1)
    assert roomy.active == 2

    tight = Admission("m", spec_of("streaming { max_active_streams: 1 }").streaming, StreamCounters())
    await tight.enter(None)
    second = asyncio.ensure_future(tight.enter(None))
    await asyncio.sleep(0)
    assert not second.done() and tight.active == 1
    with pytest.raises(ResourceExhausted, match="max_active_streams 1"):
        await tight.enter(None)
    tight.leave()
    await asyncio.wait_for(second, 1)
    assert tight.active == 1


def test_the_batching_queue_is_bounded_by_default():
    assert spec_of("dynamic_batching { }").batching == BatchingSpec(max_queue_size=DEFAULT_MAX_QUEUE_SIZE)
    assert DEFAULT_MAX_QUEUE_SIZE == 1024
    batching = spec_of("dynamic_batching { max_queue_size: 8 }").batching
    assert batching is not None and batching.max_queue_size == 8


def test_hold_until_queued_is_not_part_of_the_config():
    with pytest.raises(ConfigError, match="hold_until_queued"):
        spec_of("dynamic_batching { hold_until_queued: 4 }")


def test_hold_until_queued_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(HOLD_UNTIL_QUEUED_ENV, "held4=4, held3=3")
    held = spec_of("dynamic_batching { }", name="held4").batching
    other = spec_of("dynamic_batching { }", name="other").batching
    assert held is not None and held.hold_until_queued == 4
    assert other is not None and other.hold_until_queued == 0
    assert spec_of(name="held4").batching is None  # no batching, nothing to hold


def test_a_malformed_test_hook_names_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(HOLD_UNTIL_QUEUED_ENV, "held4:4")
    with pytest.raises(ConfigError, match=f"{HOLD_UNTIL_QUEUED_ENV}: 'held4:4' is not model=N"):
        spec_of("dynamic_batching { }", name="held4")
