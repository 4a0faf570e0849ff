"""Token buckets on an injected clock: caps in bytes/s and messages/s.

A bucket holds at most ``capacity`` tokens and gains ``rate_per_sec`` per
second, computed lazily from :class:`~logstream.clock.Clock` (no timer
thread, so tests move a :class:`~logstream.clock.ManualClock` instead of
sleeping). Spending never overdraws: an amount is taken only when it is
there, so over any interval of ``t`` seconds a bucket lets through at most
``capacity + rate_per_sec * t`` (plus what :meth:`TokenBucket.charge` forced
through, the one exception, for messages that must go whatever the cap).
With ``capacity = rate * burst_secs`` every 1-second window stays within
the cap plus ``burst_secs`` of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from logstream.clock import Clock


class TokenBucket:
    """``rate_per_sec`` tokens per second, at most ``capacity``; starts full."""

    def __init__(self, rate_per_sec: float, capacity: float, clock: Clock) -> None:
        if rate_per_sec <= 0:
            raise ValueError(f"rate_per_sec must be above 0, value: {rate_per_sec}")
        if capacity <= 0:
            raise ValueError(f"capacity must be above 0, value: {capacity}")
        self.rate_per_sec = float(rate_per_sec)
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._at = clock.monotonic()

    def _refill(self) -> float:
        now = self._clock.monotonic()
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate_per_sec)
            self._at = now
        return self._tokens

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        return self._refill()

    def fits(self, amount: float) -> bool:
        return self._refill() >= amount

    def take(self, amount: float) -> None:
        """Spend ``amount``; call only after :meth:`fits` said yes (never overdraws)."""
        tokens = self._refill()
        if amount > tokens:
            raise ValueError(f"take({amount}) with only {tokens:.1f} tokens")
        self._tokens = tokens - amount

    def try_take(self, amount: float) -> bool:
        """Spend ``amount`` if it is there; False (nothing spent) if not."""
        if self._refill() < amount:
            return False
        self._tokens -= amount
        return True

    def charge(self, amount: float) -> None:
        """Spend ``amount`` even if it is not there: the bucket goes into debt, and
        nothing else fits until the debt is repaid at ``rate_per_sec``. For the
        few messages that must go whatever the cap (accounting records); over
        any interval the bucket then lets through at most the charged amount
        more than its usual bound."""
        self._tokens = self._refill() - amount

    def wait_secs(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 now; ``inf`` if over ``capacity``)."""
        if amount > self.capacity:
            return math.inf
        missing = amount - self._refill()
        return 0.0 if missing <= 0 else missing / self.rate_per_sec


class Limiter:
    """Bytes and message buckets that must all allow a message (a topic's and the total).

    ``allow`` spends from every bucket or from none, so a message that one
    cap refuses costs nothing against the others.
    """

    def __init__(
        self, byte_buckets: Sequence[TokenBucket], message_buckets: Sequence[TokenBucket]
    ) -> None:
        self.byte_buckets = tuple(byte_buckets)
        self.message_buckets = tuple(message_buckets)

    def __bool__(self) -> bool:
        return bool(self.byte_buckets or self.message_buckets)

    @property
    def max_message_bytes(self) -> float:
        """The largest message the byte buckets can ever let through."""
        return min((b.capacity for b in self.byte_buckets), default=math.inf)

    def wait_secs(self, nbytes: float) -> float:
        """Seconds until a message of ``nbytes`` may go (0: now; inf: never)."""
        wait = 0.0
        for bucket in self.byte_buckets:
            wait = max(wait, bucket.wait_secs(nbytes))
        for bucket in self.message_buckets:
            wait = max(wait, bucket.wait_secs(1))
        return wait

    def wait_full_secs(self) -> float:
        """Seconds until every bucket is full (so a message over a capacity may be charged)."""
        wait = 0.0
        for bucket in (*self.byte_buckets, *self.message_buckets):
            wait = max(wait, bucket.wait_secs(bucket.capacity))
        return wait

    def charge(self, nbytes: float) -> None:
        """Spend ``nbytes`` and one message from every bucket, into debt if need be."""
        for bucket in self.byte_buckets:
            bucket.charge(nbytes)
        for bucket in self.message_buckets:
            bucket.charge(1)

    def allow(self, nbytes: float) -> bool:
        """Spend ``nbytes`` and one message from every bucket if all have them."""
        if not all(b.fits(nbytes) for b in self.byte_buckets) or not all(
            b.fits(1) for b in self.message_buckets
        ):
            return False
        for bucket in self.byte_buckets:
            bucket.take(nbytes)
        for bucket in self.message_buckets:
            bucket.take(1)
        return True
