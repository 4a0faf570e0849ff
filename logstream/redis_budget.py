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

:class:`RedisBudget` talks to Redis synchronously (100 ms timeouts); the sink
uses it through :class:`BackgroundBudget`, which makes those calls on a thread
of its own so the event loop never waits on Redis: a lease is served from
what the thread leased before (at first nothing: the scheduler waits a few
milliseconds and asks again), charges and demands are posted to it, and a
share is the last one the thread computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.commands.core import AsyncScript

from logstream.budget import DEMAND_TTL_SECS, fair_shares
from logstream.metrics import UnitMetrics
from logstream.tasks import stop_task

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
        self._url = url  # for the event loop's client (BackgroundBudget); never logged
        self._timeout_secs = timeout_secs
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

    def lease_call(
        self, key: str, rate: float, capacity: float, want: float, charge: bool
    ) -> tuple[list[str], list[str]]:
        """The keys and arguments of the lease script."""
        return [f"{self.key}:{key}"], [
            repr(rate),
            repr(capacity),
            repr(want),
            "1" if charge else "0",
            self._ttl_ms,
        ]

    def demand_call(self, key: str, demand: float) -> tuple[list[str], list[str]]:
        """The keys and arguments of the demand script."""
        return [f"{self.key}:demand:{key}"], [
            self._instance,
            repr(max(0.0, demand)),
            repr(DEMAND_TTL_SECS),
        ]

    def others(self, found: list[object]) -> list[float] | None:
        """The other processes' demands from the demand script's answer."""
        names = [bytes(name).decode() for name in found[0::2]]  # type: ignore[call-overload]
        values = [float(value) for value in found[1::2]]  # type: ignore[arg-type]
        if self._instance not in names:
            return None
        return [value for name, value in zip(names, values, strict=True) if name != self._instance]

    def _call(self, key: str, rate: float, capacity: float, want: float, charge: bool) -> float:
        if self._available():
            keys, args = self.lease_call(key, rate, capacity, want, charge)
            try:
                granted = self._lease(keys=keys, args=args)
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
        others = self.demands(key, demand)
        if others is None:
            return rate * self.fallback_share
        return fair_shares(rate, [max(0.0, demand), *others])[0]

    def demands(self, key: str, demand: float) -> list[float] | None:
        """Post this process's demand for ``key``; the demands the other processes
        posted within ``DEMAND_TTL_SECS`` (None: Redis did not answer)."""
        if not self._available():
            return None
        keys, args = self.demand_call(key, demand)
        try:
            found = self._share(keys=keys, args=args)
        except redis.RedisError as error:
            self._failed(error)
            return None
        self._answered()
        return self.others(found)

    def close(self) -> None:
        self._client.close()


# How many asks of the last size the tokens held here should serve.
_AHEAD = 1


@dataclass
class _Posted:
    """What the sink asked of the Redis task, not yet done."""

    leases: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    charges: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    demands: dict[str, tuple[float, float]] = field(default_factory=dict)


class BackgroundBudget:
    """A :class:`RedisBudget` whose Redis calls never block the caller: they run in
    a task on the event loop (``redis.asyncio``), which reads the answers as soon
    as they come, between the loop's other work.

    ``lease`` hands out tokens the task leased earlier (up to ``want``) and, when
    what is left would not serve another ask of that size, has the task lease
    ``want`` more (one request per key at a time): one lease ahead, so the
    scheduler rarely finds it empty, and at most about one lease per key held
    here unused (tokens are never made here: every one came from Redis's
    bucket, so the caps hold). ``charge`` posts the charge. ``share`` is
    computed from this call's demand and the other processes' demands as the
    task last read them (it posts the latest demand again every
    ``refresh_secs``, so they are that fresh; ``fallback_share`` of the rate
    before the first answer and while Redis is unreachable). The fallback, its
    counting and its retry are :class:`RedisBudget`'s. Called outside a
    running event loop, it calls Redis directly (blocking) instead.
    """

    def __init__(self, budget: RedisBudget, *, refresh_secs: float = 0.2) -> None:
        self.budget = budget
        self._posted = _Posted()
        self._in_flight: set[str] = set()
        self._reserve: dict[str, float] = {}
        # Per key: the other processes' demands as last read (None: Redis did not answer).
        self._others: dict[str, list[float] | None] = {}
        self._demands: dict[str, tuple[float, float]] = {}  # the latest posted, per key
        self._refresh_secs = refresh_secs
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._client: redis.asyncio.Redis | None = None
        self._stopping = False

    @property
    def sharing(self) -> bool:
        return self.budget.sharing

    # ------------------------------------------------------------------ the caller's side

    def _woken(self) -> bool:
        """Wake the task (started on first use); False without a running loop."""
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"redis-budget:{self.budget.key}")
        assert self._wake is not None
        self._wake.set()
        return True

    def lease(self, key: str, rate: float, capacity: float, want: float) -> float:
        have = self._reserve.get(key, 0.0)
        given = min(want, have)
        left = self._reserve[key] = have - given
        ahead = _AHEAD * want - left
        if ahead > 1e-9 and key not in self._in_flight:
            posted = self._posted.leases.get(key)
            if posted is None or posted[2] < ahead:
                self._posted.leases[key] = (rate, capacity, ahead)
                if not self._woken():
                    self._posted.leases.pop(key)
                    return given + self.budget.lease(key, rate, capacity, want - given)
        return given

    def charge(self, key: str, rate: float, capacity: float, amount: float) -> None:
        owed = self._posted.charges.get(key, (rate, capacity, 0.0))[2]
        self._posted.charges[key] = (rate, capacity, owed + amount)
        if not self._woken():
            self._posted.charges.pop(key)
            self.budget.charge(key, rate, capacity, owed + amount)

    def share(self, key: str, rate: float, demand: float) -> float:
        self._posted.demands[key] = (rate, demand)
        if not self._woken():
            self._posted.demands.pop(key)
            return self.budget.share(key, rate, demand)
        others = self._others.get(key)
        if others is None:
            return rate * self.budget.fallback_share
        return fair_shares(rate, [max(0.0, demand), *others])[0]

    async def aclose(self) -> None:
        """Stop the task and close both Redis clients."""
        # The flag ends the loop even if a cancel is lost (3.11's asyncio.timeout can
        # turn a cancel racing its expiry into the TimeoutError the loop expects).
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, f"shared budget {self.budget.key}")
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await client.aclose()
        self.budget.close()

    def close(self) -> None:
        """Without a loop: close the blocking client (the task never ran)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.budget.close()

    # ------------------------------------------------------------------ the Redis task

    async def _run(self) -> None:
        budget = self.budget
        wake = self._wake
        assert wake is not None
        client = self._client = redis.asyncio.Redis.from_url(
            budget._url,
            socket_timeout=budget._timeout_secs,
            socket_connect_timeout=budget._timeout_secs,
        )
        lease = client.register_script(_LEASE)
        share = client.register_script(_SHARE)
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + self._refresh_secs
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, refresh_at - loop.time())):
                    await wake.wait()
            wake.clear()
            posted, self._posted = self._posted, _Posted()
            self._in_flight = set(posted.leases)
            self._demands.update(posted.demands)
            if loop.time() >= refresh_at:
                # The others' demands change: read them again (posting ours again).
                refresh_at = loop.time() + self._refresh_secs
                posted.demands = {**self._demands, **posted.demands}
            for key, (rate, capacity, amount) in posted.charges.items():
                await self._lease(lease, key, rate, capacity, amount, charge=True)
            for key, (rate, capacity, want) in posted.leases.items():
                granted = await self._lease(lease, key, rate, capacity, want, charge=False)
                self._reserve[key] = self._reserve.get(key, 0.0) + granted
                self._in_flight.discard(key)
            for key, (_rate, demand) in posted.demands.items():
                self._others[key] = await self._demand(share, key, demand)

    async def _lease(
        self,
        script: AsyncScript,
        key: str,
        rate: float,
        capacity: float,
        want: float,
        *,
        charge: bool,
    ) -> float:
        budget = self.budget
        if budget._available():
            keys, args = budget.lease_call(key, rate, capacity, want, charge)
            try:
                granted = await script(keys=keys, args=args)
            except redis.RedisError as error:
                budget._failed(error)
            else:
                budget._answered()
                return float(granted)
        return budget._fallback(key, rate, capacity, want, charge)

    async def _demand(self, script: AsyncScript, key: str, demand: float) -> list[float] | None:
        budget = self.budget
        if not budget._available():
            return None
        keys, args = budget.demand_call(key, demand)
        try:
            found = await script(keys=keys, args=args)
        except redis.RedisError as error:
            budget._failed(error)
            return None
        budget._answered()
        return budget.others(found)
