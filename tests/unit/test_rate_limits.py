"""The rate limiter on a fake clock: bursts, refill, pushback, stream caps, pacing, forgetting idle principals,
and the auth config's ``rate_limits`` mapping. The same acceptance case against a real server is
tests/integration/test_rate_limits.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.core.errors import ResourceExhausted
from server.security.auth_config import AuthConfigError, parse_auth_config
from server.security.rate_limits import (
    PUSHBACK_KEY,
    RateLimitConfigError,
    RateLimiter,
    RateLimitSpec,
    pushback_metadata,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(clock: FakeClock, **specs: Any) -> RateLimiter:
    return RateLimiter(
        specs.pop("default", None),
        specs.pop("per_principal", {}),
        specs.pop("anonymous", None),
        clock=clock,
    )


def test_ten_per_second_burst_five_admits_five_of_a_hundred_then_refuses_with_pushback_until_the_refill() -> None:
    clock = FakeClock()
    limits = limiter(clock, per_principal={"alice": RateLimitSpec(10, 5)})
    outcomes = [limits.admit("alice") for _ in range(100)]
    assert outcomes[:5] == [None] * 5
    refused = outcomes[5:]
    assert all(wait is not None for wait in refused)
    # the bucket is empty: the next token is 1/10 s away, and the pushback says so in ms
    assert refused[0] == pytest.approx(0.1)
    assert pushback_metadata(0.1) == ((PUSHBACK_KEY, "100"),)
    assert pushback_metadata(0.0001) == ((PUSHBACK_KEY, "1"),)  # never 0: that would mean "retry now"
    clock.advance(0.05)
    wait = limits.admit("alice")
    assert wait == pytest.approx(0.05)
    clock.advance(0.05)
    assert limits.admit("alice") is None  # served again after the refill ...
    assert limits.admit("alice") is not None  # ... one token's worth
    clock.advance(10)  # a long pause refills up to the burst, not beyond
    assert [limits.admit("alice") for _ in range(6)] == [None] * 5 + [pytest.approx(0.1)]
    assert limits.refused == 95 + 1 + 1 + 1


def test_principals_have_their_own_buckets_default_applies_to_unlisted_and_null_means_unlimited() -> None:
    clock = FakeClock()
    limits = limiter(
        clock,
        default=RateLimitSpec(1, 1),
        per_principal={"batch-job": RateLimitSpec(100, 50), "ops": None},
    )
    assert limits.admit("carol") is None and limits.admit("carol") is not None
    assert limits.admit("dave") is None  # carol's bucket is not dave's
    assert all(limits.admit("batch-job") is None for _ in range(50))
    assert all(limits.admit("ops") is None for _ in range(10_000))
    assert limits.tracked == 3  # ops, unlimited, costs no bucket


def test_anonymous_callers_share_the_anonymous_bucket_falling_back_to_default() -> None:
    clock = FakeClock()
    limits = limiter(clock, default=RateLimitSpec(5, 5), anonymous=RateLimitSpec(1, 2))
    assert limits.spec_for("anonymous") == RateLimitSpec(1, 2)
    assert [limits.admit("anonymous") for _ in range(3)][2] is not None
    only_default = limiter(clock, default=RateLimitSpec(5, 5))
    assert only_default.spec_for("anonymous") == RateLimitSpec(5, 5)
    assert limiter(clock).admit("anonymous") is None  # no limits at all


def test_max_streams_caps_open_streams_and_a_closed_stream_frees_its_place() -> None:
    clock = FakeClock()
    limits = limiter(clock, default=RateLimitSpec(100, 100, max_streams=2))
    first = limits.open_stream("erin")
    with first, limits.open_stream("erin"):
        with pytest.raises(ResourceExhausted, match="2 open stream"):
            limits.open_stream("erin")
        with limits.open_stream("frank"):  # another principal's places are its own
            pass
    with limits.open_stream("erin"), limits.open_stream("erin"):
        pass
    with pytest.raises(RuntimeError), limits.open_stream("erin"):  # an error inside still frees the place
        raise RuntimeError("boom")
    with limits.open_stream("erin"), limits.open_stream("erin"):
        pass


def test_no_stream_cap_and_no_limits_cost_no_bucket() -> None:
    clock = FakeClock()
    limits = limiter(clock, default=RateLimitSpec(10, 10))
    for _ in range(100):
        limits.open_stream("gina").__enter__()  # never exited: no cap, nothing counted
    assert limits.tracked == 1


def test_pace_waits_for_tokens_in_arrival_order_instead_of_failing() -> None:
    clock = FakeClock()
    limits = limiter(clock, default=RateLimitSpec(10, 2))
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> None:
        for _ in range(5):
            await limits.pace("hank")

    original = asyncio.sleep
    asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        asyncio.run(main())
    finally:
        asyncio.sleep = original
    # two from the burst, then each message reserves the next token: 0.1 s, 0.2 s, 0.3 s away
    assert slept == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    # the reserved tokens are owed: a unary call is refused until they are paid back
    assert limits.admit("hank") == pytest.approx(0.4)


def test_pace_really_waits_on_the_event_loop() -> None:
    limits = RateLimiter(RateLimitSpec(50, 1))

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):
            await limits.pace("ivy")
        return loop.time() - started

    assert asyncio.run(main()) >= 2 / 50 * 0.9


def test_idle_principals_are_forgotten_so_many_jwt_subjects_do_not_grow_memory() -> None:
    clock = FakeClock()
    limits = limiter(clock, default=RateLimitSpec(10, 5))
    for i in range(10_000):
        limits.admit(f"subject-{i}")
        clock.advance(0.01)  # 100 new subjects a second; each is full again 0.5 s after its call
    # the table is swept whenever it doubles: it never holds much more than the recently active subjects
    assert limits.tracked <= 2 * 1024
    clock.advance(1)
    assert limits.sweep() > 0
    assert limits.tracked == 0


def test_a_principal_with_an_open_stream_or_an_empty_bucket_is_not_forgotten() -> None:
    clock = FakeClock()
    limits = limiter(clock, default=RateLimitSpec(1, 3, max_streams=1))
    stream = limits.open_stream("june")
    stream.__enter__()
    for _ in range(3):
        limits.admit("kim")
    clock.advance(1)
    assert limits.sweep() == 0 and limits.tracked == 2
    with pytest.raises(ResourceExhausted):
        limits.open_stream("june")  # still counted
    stream.__exit__(None, None, None)
    clock.advance(5)
    assert limits.sweep() == 2


def test_parse_reads_the_auth_configs_rate_limits_mapping() -> None:
    clock = FakeClock()
    parsed = RateLimiter.parse(
        {
            "default": {"requests_per_second": 10, "burst": 5, "max_streams": 4},
            "principals": {"alice": {"requests_per_second": 0.5}, "ops": None},
            "anonymous": {"requests_per_second": 2.5, "burst": 1},
        },
        clock=clock,
    )
    assert parsed is not None
    assert parsed.default == RateLimitSpec(10, 5, 4)
    assert parsed.per_principal == {"alice": RateLimitSpec(0.5, 1), "ops": None}  # burst: one second's worth, ≥ 1
    assert parsed.anonymous == RateLimitSpec(2.5, 1)
    assert parsed.admit("alice") is None and parsed.admit("alice") == pytest.approx(2.0)
    assert RateLimiter.parse(None) is None
    assert RateLimiter.parse({}) is None
    assert RateLimitSpec.parse({"requests_per_second": 7.5}, ("x",)) == RateLimitSpec(7.5, 8)


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ([1, 2], ("rate_limits",), "rate_limits must be a mapping"),
        ({"defaults": {}}, ("rate_limits", "defaults"), "unknown key 'defaults'"),
        ({"default": 10}, ("rate_limits", "default"), "rate_limits.default must be a mapping"),
        ({"default": {"burst": 5}}, ("rate_limits", "default"), "requests_per_second is required"),
        (
            {"default": {"requests_per_second": 0, "burst": 5}},
            ("rate_limits", "default", "requests_per_second"),
            "above 0, not 0",
        ),
        (
            {"default": {"requests_per_second": "fast"}},
            ("rate_limits", "default", "requests_per_second"),
            "above 0, not 'fast'",
        ),
        ({"default": {"requests_per_second": 1, "burst": 0.5}}, ("rate_limits", "default", "burst"), "burst must"),
        (
            {"principals": {"a": {"requests_per_second": 1, "max_streams": -1}}},
            ("rate_limits", "principals", "a", "max_streams"),
            "max_streams must",
        ),
        (
            {"principals": {"a": {"requests_per_second": 1, "stream": 1}}},
            ("rate_limits", "principals", "a", "stream"),
            "unknown key 'stream'",
        ),
        ({"principals": ["a"]}, ("rate_limits", "principals"), "map principal names"),
    ],
)
def test_parse_errors_name_the_key_so_the_config_loader_can_name_the_line(
    raw: Any, path: tuple[str, ...], message: str
) -> None:
    with pytest.raises(RateLimitConfigError) as error:
        RateLimiter.parse(raw)
    assert message in str(error.value)
    assert error.value.path == path


def test_the_auth_config_names_the_line_of_a_bad_rate_limit() -> None:
    text = "rate_limits:\n  principals:\n    alice:\n      requests_per_second: 1\n      burst: 0\n"
    with pytest.raises(AuthConfigError, match=r"auth.yaml:5: .*burst must be a whole number"):
        parse_auth_config(text, "auth.yaml")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ((0, 5), "requests_per_second must be a number above 0"),
        ((float("inf"), 5), "requests_per_second must be a number above 0"),
        ((1, 0), "burst must be"),
        ((1, 1.5), "burst must be"),
        ((1, 1, -1), "max_streams must be"),
    ],
)
def test_a_spec_refuses_values_that_would_break_the_bucket(spec: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimitSpec(*spec)
