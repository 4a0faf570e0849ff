"""One topic's state, shared by the payload builder, the sampler and the scheduler.

A plain record with slots: each of those parts reads and writes its own
fields (the partial payload; the keep ratios and counts; the ready queue and
buckets), so the sink keeps one object per topic rather than three maps.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

from logstream.payload import CompressionEstimate
from logstream.ratelimit import Limiter
from logstream.sampling import LEVELS, BudgetController

if TYPE_CHECKING:
    from .payloads import Payload


class TopicState:
    """One topic's state: its partial payload, its ready queue, its caps, sampler and counts."""

    __slots__ = (
        "bytes_cap",
        "controller",
        "created",
        "deadline",
        "estimate",
        "factors",
        "interval_start",
        "interval_start_wall",
        "last_used",
        "levels",
        "limiter",
        "lines",
        "message_wire",
        "messages_cap",
        "name",
        "offered",
        "owed",
        "passed",
        "queue_limit",
        "queued_bytes",
        "rate_limited",
        "rates",
        "ratios",
        "raw",
        "raw_limit",
        "ready",
        "sampled",
        "topic_bytes",
        "topic_ratios",
        "wake_at",
    )

    def __init__(self, name: str, now: float, wall: float) -> None:
        self.name = name
        self.topic_bytes = len(name.encode("utf-8", "surrogatepass"))
        self.lines: list[bytes] = []  # the partial payload, one JSON line per event
        self.levels: list[int] = []  # severity index per line (only when levels are tracked)
        self.raw = 0  # NDJSON bytes of ``lines``
        self.raw_limit = 1 << 62  # NDJSON bytes at which the payload is sealed
        self.deadline: float | None = None  # when the partial payload must go
        self.ready: deque[Payload] = deque()  # framed, waiting for tokens or room
        self.queued_bytes = 0  # wire bytes in ``ready``
        self.queue_limit = math.inf
        self.wake_at: float | None = None  # when the buckets will have room for ready[0]
        self.limiter = Limiter((), ())
        self.bytes_cap: float | None = None
        self.messages_cap: float | None = None
        self.controller: BudgetController | None = None
        self.estimate = CompressionEstimate()
        self.message_wire = 0.0  # smoothed wire bytes per message
        # Sampling: keep ratio, "owed" fraction, and the sample_rate JSON per severity.
        self.ratios = [1.0] * LEVELS
        self.topic_ratios: list[float] | None = None
        self.owed = [0.0] * LEVELS
        self.rates: list[bytes | None] = [None] * LEVELS
        self.factors = [1.0] * LEVELS
        self.offered = [0] * LEVELS  # this control window
        # This accounting interval: events sampled out, dropped by the limiter, passed on.
        self.sampled = [0] * LEVELS
        self.rate_limited = [0] * LEVELS
        self.passed = [0] * LEVELS
        self.interval_start = now
        self.interval_start_wall = wall
        self.last_used = now
        self.created = now  # its own sampler's first window starts here


def head_severity(state: TopicState) -> int:
    """The severity of the payload next in the topic's queue (-1: none)."""
    return state.ready[0].severity if state.ready else -1
