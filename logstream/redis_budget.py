"""A byte budget shared by every instance of a fleet, kept in Redis.

``rate_limit: {total_bytes_per_sec: X, shared: {redis: URL, key: NAME}}``: each
cap key is a token bucket in a Redis hash, refilled and spent atomically by a
Lua script that reads the time from Redis (``TIME``), so the instances' clocks
do not matter. Instances lease tokens in chunks (:class:`~logstream.budget.LeasedBucket`,
allow-at-most), so Redis sees a few requests per second per instance; keys
expire when nobody used them for a while.

When Redis cannot be reached, the instance falls back to a conservative local
share of each cap (``fallback_share`` of it, by default ``1 / expected_instances``),
counts every lease served that way (``logstream_budget_fallback_leases_total``)
and logs it once with the URL's password masked; it never stops publishing
(the scheduler still sends WARNING+ first), and it tries Redis again every
``retry_secs``, sharing again as soon as Redis answers.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis

from logstream.budget import DEMAND_TTL_SECS, fair_shares
from logstream.metrics import UnitMetrics

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV rate, capacity, amount, charge (1: into debt), ttl ms.
# Numbers go back as strings: Redis turns Lua numbers into integers.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, cap, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(v[1]), tonumber(v[2])
if tokens == nil or at == nil then tokens = cap; at = now end
if now > at then tokens = math.min(cap, tokens + (now - at) * rate) end
local granted = want
if ARGV[4] ~= '1' then granted = math.max(0, math.min(want, tokens)) end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(granted)
"""

# KEYS[1] demands hash; ARGV instance, demand, ttl secs. Returns [instance, demand, ...]
# of the instances that posted within the ttl (stale ones are removed).
_SHARE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(ttl * 20))
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local demand, at = string.match(all[i + 1], '(%S+) (%S+)')
  if at ~= nil and now - tonumber(at) <= ttl then
    table.insert(out, all[i]); table.insert(out, demand)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisBudget:
    """A :class:`~logstream.budget.LeaseSource` in Redis, with a local fallback."""

    def __init__(
        self,
        url: str,
        key: str,
        metrics: UnitMetrics,
        *,
        fallback_share: float,
        idle_secs: float = 60.0,
        retry_secs: float = 1.0,
        timeout_secs: float = 0.1,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = mask_url(url)
        self.key = key
        self.metrics = metrics
        self.fallback_share = fallback_share
        self._ttl_ms = str(int(idle_secs * 1000))
        self._retry_secs = retry_secs
        self._now = now
        self._instance = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_secs, socket_connect_timeout=timeout_secs
        )
        self._lease = self._client.register_script(_LEASE)
        self._share = self._client.register_script(_SHARE)
        self._down_since: float | None = None  # in fallback since then
        self._retry_at = 0.0
        # Local buckets while Redis is unreachable: key -> (tokens, at).
        self._local: dict[str, tuple[float, float]] = {}

    @property
    def sharing(self) -> bool:
        """False while Redis is unreachable (the local fallback share applies)."""
        return self._down_since is None

    def _available(self) -> bool:
        return self._down_since is None or self._now() >= self._retry_at

    def _failed(self, error: redis.RedisError) -> None:
        now = self._now()
        self._retry_at = now + self._retry_secs
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "shared budget %s at %s unreachable (%s); using the local share "
                "(%.0f%% of each cap) until it answers",
                self.key,
                self.where,
                type(error).__name__,
                100 * self.fallback_share,
            )

    def _answered(self) -> None:
        if self._down_since is not None:
            log.warning(
                "shared budget %s at %s answers again after %.1f s; sharing",
                self.key,
                self.where,
                self._now() - self._down_since,
            )
            self._down_since = None
            self._local.clear()

    def _fallback(self, key: str, rate: float, capacity: float, want: float, charge: bool) -> float:
        self.metrics.budget_fallback_leases += 1
        rate *= self.fallback_share
        capacity = max(capacity * self.fallback_share, want if charge else 0.0)
        now = self._now()
        tokens, at = self._local.get(key, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - at) * rate)
        granted = want if charge else max(0.0, min(want, tokens))
        self._local[key] = (tokens - granted, now)
        return granted

    def _call(self, key: str, rate: float, capacity: float, want: float, charge: bool) -> float:
        if self._available():
            try:
                granted = self._lease(
                    keys=[f"{self.key}:{key}"],
                    args=[
                        repr(rate),
                        repr(capacity),
                        repr(want),
                        "1" if charge else "0",
                        self._ttl_ms,
                    ],
                )
            except redis.RedisError as error:
                self._failed(error)
            else:
                self._answered()
                return float(granted)
        return self._fallback(key, rate, capacity, want, charge)

    def lease(self, key: str, rate: float, capacity: float, want: float) -> float:
        return self._call(key, rate, capacity, want, charge=False)

    def charge(self, key: str, rate: float, capacity: float, amount: float) -> None:
        self._call(key, rate, capacity, amount, charge=True)

    def share(self, key: str, rate: float, demand: float) -> float:
        if self._available():
            try:
                found = self._share(
                    keys=[f"{self.key}:demand:{key}"],
                    args=[self._instance, repr(max(0.0, demand)), repr(DEMAND_TTL_SECS)],
                )
            except redis.RedisError as error:
                self._failed(error)
            else:
                self._answered()
                names = [bytes(name).decode() for name in found[0::2]]
                demands = [float(value) for value in found[1::2]]
                if self._instance in names:
                    return fair_shares(rate, demands)[names.index(self._instance)]
        return rate * self.fallback_share

    def close(self) -> None:
        self._client.close()
