"""The rpm / tpm token buckets: on a virtual clock (exact spacing) and on the real one (lower bounds)."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Iterator

import pytest

from promptctl import ratelimit
from promptctl.ratelimit import RateLimiter


class Clock:
    """A monotonic clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        assert delay > 0, "the limiter slept for nothing"
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock()
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(monotonic=c.monotonic))
    monkeypatch.setattr(ratelimit, "asyncio", types.SimpleNamespace(Lock=asyncio.Lock, sleep=c.sleep))
    yield c


def grant_times(limiter: RateLimiter, clock: Clock, sizes: list[int]) -> list[float]:
    """When each request (of `sizes` tokens) is let through, relative to the start."""
    start = clock.now
    granted: list[float] = []

    async def main() -> None:
        for size in sizes:
            await limiter.acquire(size)
            granted.append(clock.now - start)

    asyncio.run(main())
    return granted


def test_no_limits_is_inactive_and_never_waits(clock: Clock) -> None:
    for limiter in (RateLimiter(), RateLimiter(None, None), RateLimiter(rpm=0, tpm=0)):
        assert not limiter.active
        assert grant_times(limiter, clock, [10**9] * 5) == [0.0] * 5
    assert clock.sleeps == []
    assert RateLimiter(rpm=1).active and RateLimiter(tpm=1).active


def test_rpm_allows_one_seconds_worth_then_spaces_requests_evenly(clock: Clock) -> None:
    # 120 rpm = 2 per second: a bucket of 2, then one every 0.5 s.
    times = grant_times(RateLimiter(rpm=120), clock, [1] * 6)
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])


def test_rpm_below_sixty_still_lets_the_first_request_go(clock: Clock) -> None:
    # 30 rpm: the bucket holds one request (not half of one), then one every 2 s.
    times = grant_times(RateLimiter(rpm=30), clock, [1] * 3)
    assert times == pytest.approx([0.0, 2.0, 4.0])


def test_tpm_spaces_requests_by_their_tokens(clock: Clock) -> None:
    # 6000 tpm = 100 tokens per second, bucket of 100.
    times = grant_times(RateLimiter(tpm=6000), clock, [50, 50, 50, 100, 10])
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.5, 1.6])


def test_a_request_larger_than_the_bucket_goes_once_full_and_is_paid_for_later(clock: Clock) -> None:
    # 100 tokens/s, bucket of 100: a 300-token request waits for a full bucket (it has one),
    # then the 200 tokens over its allowance delay the next request.
    times = grant_times(RateLimiter(tpm=6000), clock, [300, 100])
    assert times == pytest.approx([0.0, 3.0])


def test_the_tighter_of_rpm_and_tpm_wins(clock: Clock) -> None:
    # 600 rpm allows 10 at once; 600 tpm (10 tokens/s) allows two 5-token requests per second.
    times = grant_times(RateLimiter(rpm=600, tpm=600), clock, [5, 5, 5, 5])
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.0])
    clock.sleeps.clear()
    # Now rpm is the tighter one: 60 rpm, a huge tpm.
    times = grant_times(RateLimiter(rpm=60, tpm=10**7), clock, [1, 1, 1])
    assert times == pytest.approx([0.0, 1.0, 2.0])


def test_concurrent_callers_share_one_budget(clock: Clock) -> None:
    limiter = RateLimiter(rpm=120)
    start = clock.now
    granted: list[float] = []

    async def one() -> None:
        await limiter.acquire(1)
        granted.append(clock.now - start)

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(6)))

    asyncio.run(main())
    assert sorted(granted) == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])


def test_idle_time_refills_up_to_the_capacity_only(clock: Clock) -> None:
    limiter = RateLimiter(rpm=120)
    assert grant_times(limiter, clock, [1, 1]) == [0.0, 0.0]
    clock.now += 60.0  # a long pause does not bank a minute of requests
    assert grant_times(limiter, clock, [1, 1, 1]) == pytest.approx([0.0, 0.0, 0.5])


# -- the real clock: lower bounds only -----------------------------------------


def real_elapsed(limiter: RateLimiter, sizes: list[int], *, concurrent: bool = False) -> float:
    async def main() -> None:
        if concurrent:
            await asyncio.gather(*(limiter.acquire(s) for s in sizes))
        else:
            for s in sizes:
                await limiter.acquire(s)

    start = time.monotonic()
    asyncio.run(main())
    return time.monotonic() - start


def test_rpm_on_the_real_clock() -> None:
    # 120 rpm: capacity 2, then 2 per second: 5 requests need at least (5 - 2) / 2 s.
    assert real_elapsed(RateLimiter(rpm=120), [1] * 5, concurrent=True) >= 1.5 - 0.02


def test_tpm_on_the_real_clock() -> None:
    # 12000 tpm: 200 tokens per second, capacity 200: 400 tokens need at least 1 s.
    assert real_elapsed(RateLimiter(tpm=12000), [100] * 4) >= 1.0 - 0.02
