"""Caps shared with other processes: the buckets the scheduler gets when the sink's
budget is not its own (:mod:`logstream.budget`)."""

from __future__ import annotations

import re
from pathlib import Path

from logstream.budget import LeasedBucket, LeaseSource
from logstream.clock import Clock

from .scheduler import BucketFactory


def budget_path(host_dir: Path, sink: str) -> Path:
    """The host-wide budget file of the sink named ``sink``."""
    return host_dir / "budgets" / f"mqtt-{re.sub(r'[^A-Za-z0-9_.-]', '_', sink)}.budget"


def host_buckets(source: LeaseSource, clock: Clock) -> BucketFactory:
    """Buckets leasing their tokens from ``source``, one shared bucket per cap key."""

    def bucket(key: str, rate: float, capacity: float) -> LeasedBucket:
        return LeasedBucket(source, key, rate, capacity, clock)

    return bucket
