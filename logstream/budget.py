"""Byte and message budgets shared by several processes: one cap for a whole host.

With ``pipeline.workers: N`` every worker runs the same MQTT sink, and a cap
such as ``rate_limit.total_bytes_per_sec`` must hold for the host, not per
worker. The budget of each cap key lives in a small memory-mapped file in
the host's shared directory (:attr:`logstream.units.BuildContext.host_dir`):
one token bucket per key, updated under ``fcntl.flock`` (the kernel releases
the lock of a worker that dies, so nobody waits on a dead process).

A worker does not take the lock for every message: a :class:`LeasedBucket`
leases a chunk of tokens (``lease_secs`` of the rate, allow-at-most: never
more than the shared bucket holds) into a local bucket and spends from it;
it goes back to the file only when the local tokens run out. The shared
bucket holds half of what a local one would (``burst_secs`` of the rate) and
a worker holds at most a quarter of that beyond its next message, so what
the host sends in any 1-second window stays within the cap plus
``burst_secs`` of it, as with one process, also counting the leases the
workers hold and the paho threads writing a little late.

Besides the tokens, each worker posts how many bytes/s it would send without
sampling (its *demand*) per key; :meth:`HostBudget.share` divides the cap
over the workers that posted in the last few seconds, max-min fair (no worker
gets more than it wants; what one leaves goes to the others), so each
worker's sampler aims at the share it can actually get.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from logstream.clock import Clock
from logstream.ratelimit import TokenBucket

# --------------------------------------------------------------------------- the file

_MAGIC = b"LSBUDGT1"
MAX_WORKERS = 64
_SLOTS = 128
# key digest, tokens, at (host monotonic seconds)
_HEAD = struct.Struct("<16sdd")
# per worker: demand (bytes/s), when it was posted
_DEMAND = struct.Struct("<dd")
_SLOT_SIZE = _HEAD.size + MAX_WORKERS * _DEMAND.size
_FILE_SIZE = len(_MAGIC) + _SLOTS * _SLOT_SIZE
# A worker whose demand is older than this is gone (or idle): not counted in the shares.
DEMAND_TTL_SECS = 3.0


class LeaseSource(Protocol):
    """Where a :class:`LeasedBucket` gets tokens: a budget shared with other processes."""

    def lease(self, key: str, rate: float, capacity: float, want: float) -> float:
        """Take up to ``want`` tokens of ``key`` (at most what is there); return them."""

    def charge(self, key: str, rate: float, capacity: float, amount: float) -> None:
        """Take ``amount`` tokens whatever is there (the shared bucket goes into debt)."""

    def share(self, key: str, rate: float, demand: float) -> float:
        """Post this process's demand (bytes/s) for ``key``; return the part of ``rate``
        it may count on."""


def fair_shares(rate: float, demands: Sequence[float]) -> list[float]:
    """Max-min fair division of ``rate``: nobody gets more than its demand unless
    everyone is served, then the rest is split evenly (room to grow)."""
    count = len(demands)
    if not count:
        return []
    shares = [0.0] * count
    remaining, left = rate, count
    for index in sorted(range(count), key=lambda i: demands[i]):
        fair = remaining / left
        give = min(max(demands[index], 0.0), fair)
        shares[index] = give
        remaining -= give
        left -= 1
    if remaining > 1e-9:
        extra = remaining / count
        shares = [share + extra for share in shares]
    return shares


class HostBudget:
    """The token buckets and demands of one sink's cap keys, in a file every worker maps."""

    def __init__(self, path: Path, worker: int, now: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= worker < MAX_WORKERS:
            raise ValueError(f"a host budget serves workers 0 to {MAX_WORKERS - 1}, not {worker}")
        self.path = path
        self.worker = worker
        self._now = now  # CLOCK_MONOTONIC: one clock for every process of the host
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._locked():
            if os.fstat(self._fd).st_size < _FILE_SIZE:
                os.ftruncate(self._fd, _FILE_SIZE)
        self._map = mmap.mmap(self._fd, _FILE_SIZE)
        with self._locked():
            if self._map[: len(_MAGIC)] != _MAGIC:
                self._map[:] = bytes(_FILE_SIZE)
                self._map[: len(_MAGIC)] = _MAGIC
        self._offsets: dict[str, int] = {}

    def close(self) -> None:
        """Withdraw this process's demands (the others get its part at once) and unmap."""
        with contextlib.suppress(OSError, ValueError), self._locked():
            for offset in self._offsets.values():
                base = offset + _HEAD.size + self.worker * _DEMAND.size
                _DEMAND.pack_into(self._map, base, 0.0, 0.0)
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, key: str) -> int:
        """The offset of ``key``'s slot (claimed if new); call under the lock."""
        offset = self._offsets.get(key)
        if offset is not None:
            return offset
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        start = int.from_bytes(digest[:4], "little") % _SLOTS
        for probe in range(_SLOTS):
            offset = len(_MAGIC) + ((start + probe) % _SLOTS) * _SLOT_SIZE
            stored = bytes(self._map[offset : offset + 16])
            if stored == digest:
                break
            if stored == bytes(16):  # free: claim it, full of tokens (as a new bucket is)
                _HEAD.pack_into(self._map, offset, digest, math.nan, 0.0)
                break
        else:
            raise RuntimeError(f"{self.path}: more than {_SLOTS} cap keys in one budget file")
        self._offsets[key] = offset
        return offset

    def _refilled(self, offset: int, rate: float, capacity: float) -> tuple[bytes, float, float]:
        digest, tokens, at = _HEAD.unpack_from(self._map, offset)
        now = self._now()
        if math.isnan(tokens):
            tokens = capacity
        elif now > at:
            tokens = min(capacity, tokens + (now - at) * rate)
        return digest, tokens, now

    def lease(self, key: str, rate: float, capacity: float, want: float) -> float:
        with self._locked():
            offset = self._slot(key)
            digest, tokens, now = self._refilled(offset, rate, capacity)
            granted = max(0.0, min(want, tokens))
            _HEAD.pack_into(self._map, offset, digest, tokens - granted, now)
        return granted

    def charge(self, key: str, rate: float, capacity: float, amount: float) -> None:
        with self._locked():
            offset = self._slot(key)
            digest, tokens, now = self._refilled(offset, rate, capacity)
            _HEAD.pack_into(self._map, offset, digest, tokens - amount, now)

    def share(self, key: str, rate: float, demand: float) -> float:
        with self._locked():
            offset = self._slot(key)
            now = self._now()
            base = offset + _HEAD.size
            _DEMAND.pack_into(self._map, base + self.worker * _DEMAND.size, max(0.0, demand), now)
            demands: list[float] = []
            mine = 0
            for worker in range(MAX_WORKERS):
                wanted, at = _DEMAND.unpack_from(self._map, base + worker * _DEMAND.size)
                if at and now - at <= DEMAND_TTL_SECS:
                    if worker == self.worker:
                        mine = len(demands)
                    demands.append(wanted)
        return fair_shares(rate, demands)[mine]


# --------------------------------------------------------------------------- the local side


class LeasedBucket(TokenBucket):
    """A token bucket whose tokens come from a shared budget in leases.

    Behaves as a :class:`~logstream.ratelimit.TokenBucket` of ``rate_per_sec``
    and ``capacity`` for the :class:`~logstream.ratelimit.Limiter`, but holds
    only what it leased: when a message does not fit, it leases the missing
    tokens, or ``lease_secs`` of the rate but at most a quarter of the bucket
    (never more than the shared bucket holds). Its capacity is half of
    ``capacity`` (so the scheduler keeps payloads under a quarter of it).
    """

    def __init__(
        self,
        source: LeaseSource,
        key: str,
        rate_per_sec: float,
        capacity: float,
        clock: Clock,
        lease_secs: float = 0.05,
    ) -> None:
        # Half of the bucket a process of its own would have: leases held by the
        # workers, and paho threads that write a little later than they were told,
        # may shift up to about as much again into a window.
        super().__init__(rate_per_sec, capacity / 2, clock)
        self.source = source
        self.key = key
        self.shared_capacity = self.capacity
        # Held beyond what the next message needs: at most a quarter of that.
        self.chunk = min(rate_per_sec * lease_secs, self.capacity / 4)
        self._tokens = 0.0
        self.leases = 0  # how often the shared budget was asked (for tests and metrics)

    def _refill(self) -> float:
        return self._tokens

    def fits(self, amount: float) -> bool:
        missing = amount - self._tokens
        if missing > 0:
            self.leases += 1
            want = min(max(missing, self.chunk), self.shared_capacity)
            self._tokens += self.source.lease(
                self.key, self.rate_per_sec, self.shared_capacity, want
            )
        return self._tokens >= amount - 1e-9

    def take(self, amount: float) -> None:
        if not self.fits(amount):
            raise ValueError(f"take({amount}) with only {self._tokens:.1f} tokens")
        self._tokens = max(0.0, self._tokens - amount)

    def try_take(self, amount: float) -> bool:
        if not self.fits(amount):
            return False
        self._tokens = max(0.0, self._tokens - amount)
        return True

    def charge(self, amount: float) -> None:
        local = min(self._tokens, amount)
        self._tokens -= local
        if amount > local:
            self.source.charge(self.key, self.rate_per_sec, self.shared_capacity, amount - local)

    def wait_secs(self, amount: float) -> float:
        if amount > self.shared_capacity:
            return math.inf
        if self.fits(amount):
            return 0.0
        # The shared bucket is empty (the lease took what was there): the missing
        # tokens come at the host's rate, if no other worker takes them first.
        return (amount - self._tokens) / self.rate_per_sec
