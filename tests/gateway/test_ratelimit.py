"""The token bucket, on a fake clock: unit tests (HTTP behaviour is in test_http)."""

from __future__ import annotations

import pytest

from gateway import ratelimit
from gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a") == 1  # half a second to the next token; rounded up
    clock.now += 0.5
    assert limiter.acquire("a") == 0
    clock.now += 100
    assert [limiter.acquire("a") for _ in range(4)] == [0, 0, 0, 1]  # refills to the burst only


def test_slow_rates_ask_for_longer_waits() -> None:
    limiter = RateLimiter(0.1, 1, Clock())
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") == 10


def test_tokens_have_their_own_buckets() -> None:
    limiter = RateLimiter(1.0, 1, Clock())
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 1
    assert limiter.acquire("b") == 0


def test_zero_rate_disables() -> None:
    limiter = RateLimiter(0.0, 1, Clock())
    assert not limiter.enabled
    assert {limiter.acquire("a") for _ in range(10)} == {0}


def test_buckets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 3)
    limiter = RateLimiter(1.0, 1, Clock())
    for name in "abcde":
        limiter.acquire(name)
    assert len(limiter._buckets) == 3
    assert limiter.acquire("a") == 0  # forgotten, so full again
