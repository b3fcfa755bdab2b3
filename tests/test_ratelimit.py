"""The one token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest

from tickwire.model.ratelimit import TokenBucket


def test_burst_then_refill_at_the_rate() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait(0.0) == pytest.approx(0.5)
    assert b.take(0.5) and not b.take(0.5)
    assert b.level(100.0) == 3  # never more than the burst


def test_give_back_returns_one_token_up_to_the_burst() -> None:
    b = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    b.give_back(0.0)
    assert b.take(0.0) and not b.take(0.0)
    b.give_back(10.0)
    assert b.level(10.0) == 2


def test_a_clock_that_steps_back_adds_nothing() -> None:
    b = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert b.take(10.0)
    assert not b.take(5.0)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1, now=0)
