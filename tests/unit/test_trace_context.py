"""The cheap sampling decision agrees with OpenTelemetry's own propagator and samplers; the SDK client's
trace context injection costs nothing without OpenTelemetry."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from inferd.trace_context import with_trace_context
from server.telemetry.trace_context import PAIRS_GETTER, SamplingDecider, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"

HEADERS = [
    f"00-{TRACE}-{SPAN}-01",
    f"00-{TRACE}-{SPAN}-00",
    f"00-{TRACE}-{SPAN}-03",
    f" \t00-{TRACE}-{SPAN}-01 ",
    f"00-{TRACE.upper()}-{SPAN}-01",
    f"ff-{TRACE}-{SPAN}-01",
    f"00-{TRACE}-{SPAN}-01-extra",
    f"01-{TRACE}-{SPAN}-01-future",
    f"00-{'0' * 32}-{SPAN}-01",
    f"00-{TRACE}-{'0' * 16}-01",
    f"00-{TRACE}-{SPAN}",
    f"00-{TRACE}-{SPAN}-01" + "x" * 600,
    "",
    "garbage",
]


@pytest.mark.parametrize("header", HEADERS)
def test_traceparent_is_parsed_as_the_w3c_propagator_does(header: str) -> None:
    context = TraceContextTextMapPropagator().extract([("traceparent", header)], Context(), PAIRS_GETTER)
    expected = trace.get_current_span(context).get_span_context()
    parsed = parse_traceparent(header)
    if not expected.is_valid:
        assert parsed is None
    else:
        assert parsed is not None
        assert (parsed.trace_id, parsed.span_id, parsed.sampled) == (
            expected.trace_id,
            expected.span_id,
            expected.trace_flags.sampled,
        )


SDK_SAMPLERS: dict[str, tuple[str, float | None, Sampler]] = {
    "always_on": ("always_on", None, ALWAYS_ON),
    "always_off": ("always_off", None, ALWAYS_OFF),
    "ratio": ("traceidratio", 0.3, TraceIdRatioBased(0.3)),
    "parent_on": ("parentbased_always_on", None, ParentBased(ALWAYS_ON)),
    "parent_off": ("parentbased_always_off", None, ParentBased(ALWAYS_OFF)),
    "parent_ratio": ("parentbased_traceidratio", 0.3, ParentBased(TraceIdRatioBased(0.3))),
}


@pytest.mark.parametrize("which", SDK_SAMPLERS)
def test_the_decision_is_the_sdk_samplers_decision(which: str) -> None:
    name, arg, sdk = SDK_SAMPLERS[which]
    decider = SamplingDecider(name, arg)
    rng = random.Random(7)
    for _ in range(300):
        trace_id, span_id = rng.getrandbits(128) or 1, rng.getrandbits(64) or 1
        header = f"00-{trace_id:032x}-{span_id:016x}-{rng.choice(['00', '01'])}"
        metadata = [("user-agent", "x"), ("traceparent", header)]
        parent = TraceContextTextMapPropagator().extract(metadata, Context(), PAIRS_GETTER)
        sdk_says = sdk.should_sample(parent, trace_id, "call").decision is Decision.RECORD_AND_SAMPLE
        assert (decider.decide(metadata) is not None) == sdk_says


@pytest.mark.parametrize("which", SDK_SAMPLERS)
def test_a_new_root_takes_a_trace_id_the_sdk_sampler_would_sample(which: str) -> None:
    name, arg, sdk = SDK_SAMPLERS[which]
    decider = SamplingDecider(name, arg)
    drawn = [decider.decide([("traceparent", "not-a-traceparent")]) for _ in range(300)]
    sampled = [trace_id for trace_id in drawn if trace_id is not None]
    assert all(sdk.should_sample(Context(), t, "call").decision is Decision.RECORD_AND_SAMPLE for t in sampled)
    expected = {"always_on": 300, "always_off": 0, "parent_on": 300, "parent_off": 0}.get(which)
    if expected is not None:
        assert len(sampled) == expected
    else:
        assert 30 < len(sampled) < 150  # ~90 of 300 at 0.3
    assert 0 not in sampled


def test_a_remote_parent_continues_its_trace_rather_than_drawing_one() -> None:
    assert SamplingDecider("parentbased_always_off", None).decide([("traceparent", f"00-{TRACE}-{SPAN}-01")]) == 0


def test_the_client_adds_the_current_spans_context_to_its_metadata() -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")
    fixed = (("authorization", "Bearer x"), ("traceparent", "stale"))
    assert with_trace_context(fixed) is fixed  # no current span
    assert with_trace_context(None) is None
    with tracer.start_as_current_span("caller") as span:
        context = span.get_span_context()
        metadata = with_trace_context(fixed)
    assert metadata is not None
    assert dict(metadata) == {
        "authorization": "Bearer x",
        "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}",
    }


def test_the_sdk_never_imports_opentelemetry_itself() -> None:
    code = (
        "import sys, numpy as np, inferd\n"
        "from inferd.trace_context import with_trace_context\n"
        "assert with_trace_context(None) is None\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'opentelemetry imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
