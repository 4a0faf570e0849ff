"""Caps shared with other processes: the buckets the scheduler gets when the sink's
budget is not its own (:mod:`logstream.budget`)."""

from __future__ import annotations

import re
from pathlib import Path

from logstream.budget import HostBudget, LeasedBucket, LeaseSource
from logstream.clock import Clock
from logstream.metrics import UnitMetrics
from logstream.redis_budget import BackgroundBudget, RedisBudget
from logstream.units import BuildContext

from .limits import RateLimitConfig
from .scheduler import BucketFactory


def open_budget(
    limits: RateLimitConfig | None, ctx: BuildContext, sink: str, metrics: UnitMetrics
) -> tuple[HostBudget | BackgroundBudget | None, int]:
    """The budget the sink's caps draw from when it is not the sink's own, and how
    many processes share it (roughly): ``rate_limit.shared`` (Redis, the fleet),
    else with ``pipeline.workers`` above 1 the host's file; else none."""
    if limits is None:
        return None, 1
    if limits.shared is not None:
        shared = limits.shared
        redis_budget = RedisBudget(
            shared.redis.get_secret_value(), shared.key, metrics, fallback_share=shared.local_share
        )
        # Redis calls on a thread of their own: the event loop never waits on Redis.
        return BackgroundBudget(redis_budget), shared.expected_instances
    if ctx.workers > 1:
        return HostBudget(budget_path(ctx.host_dir, sink), ctx.worker), ctx.workers
    return None, 1


def budget_path(host_dir: Path, sink: str) -> Path:
    """The host-wide budget file of the sink named ``sink``."""
    return host_dir / "budgets" / f"mqtt-{re.sub(r'[^A-Za-z0-9_.-]', '_', sink)}.budget"


def host_buckets(source: LeaseSource, clock: Clock) -> BucketFactory:
    """Buckets leasing their tokens from ``source``, one shared bucket per cap key."""

    def bucket(key: str, rate: float, capacity: float) -> LeasedBucket:
        return LeasedBucket(source, key, rate, capacity, clock)

    return bucket
