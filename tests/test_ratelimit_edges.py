"""Token bucket and limiter edges that mutation testing (scripts/mutate) found unguarded."""

from __future__ import annotations

import pytest

from logstream.clock import ManualClock
from logstream.ratelimit import Limiter, TokenBucket


def test_fractional_rates_and_capacities_are_valid() -> None:
    clock = ManualClock()
    bucket = TokenBucket(0.5, 0.5, clock)  # one message every two seconds, no burst
    assert bucket.tokens == 0.5
    assert not bucket.try_take(1)
    clock.advance(1.0)
    assert bucket.tokens == 0.5  # full: never more than the capacity
    assert bucket.try_take(0.5)
    assert bucket.wait_secs(0.5) == 1.0


def test_wait_secs_is_zero_when_the_amount_is_there() -> None:
    bucket = TokenBucket(10, 100, ManualClock())
    assert bucket.wait_secs(40) == 0.0  # 60 tokens more than needed: no wait, not -6 s
    assert bucket.wait_secs(100) == 0.0
    bucket.take(100)
    assert bucket.wait_secs(30) == 3.0


def test_limiter_charge_spends_one_message_per_message_bucket() -> None:
    clock = ManualClock()
    messages = TokenBucket(1, 3, clock)
    nbytes = TokenBucket(100, 1000, clock)
    limiter = Limiter([nbytes], [messages])
    limiter.charge(250)
    assert messages.tokens == 2
    assert nbytes.tokens == 750
    limiter.charge(2000)  # into debt, whatever the cap
    assert messages.tokens == 1
    assert nbytes.tokens == -1250


@pytest.mark.parametrize(
    ("bytes_buckets", "message_buckets", "truth"),
    [(0, 0, False), (1, 0, True), (0, 1, True), (1, 1, True)],
)
def test_a_limiter_is_true_when_it_has_a_bucket(
    bytes_buckets: int, message_buckets: int, truth: bool
) -> None:
    clock = ManualClock()
    limiter = Limiter(
        [TokenBucket(1, 1, clock)] * bytes_buckets, [TokenBucket(1, 1, clock)] * message_buckets
    )
    assert bool(limiter) is truth
