"""Scheduling under the caps: token buckets per topic and in total, the ready queues,
priorities, eviction and the accounting records.

Payloads wait in a short queue per topic (``queue_secs`` of the rate) for
tokens, the most severe first; when a queue overflows, the queued payloads
of the lowest severity are dropped and counted (``rate_limited``) to make
room, so the pipeline never waits on a rate limit (a payload holding WARNING+
events may overdraw full queues up to twice their size). Accounting records are
never dropped by a cap: they go first, into bucket debt if need be.

Buckets are :class:`~logstream.ratelimit.TokenBucket` objects (each 1-second
window carries at most the cap plus ``burst_secs`` of it); where the
buckets come from (local, or leased from a budget shared with other
processes) is the job of the ``buckets`` factory the sink passes in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

import paho.mqtt.client as mqtt

from logstream.clock import Clock
from logstream.metrics import DropReason, UnitMetrics
from logstream.payload import dumps_event
from logstream.ratelimit import Limiter, TokenBucket
from logstream.sampling import INDEX_OF, LEVEL_NAMES, LEVELS, accounting_record
from logstream.severity import Severity

from .limits import RateLimitConfig
from .payloads import Payload, PayloadBuilder
from .state import TopicState

# Payloads holding an event of this severity or above may overdraw a full queue.
PROTECTED = INDEX_OF[Severity.WARNING]

# (cap key, rate per second, capacity) -> a bucket. The key is "total/bytes",
# "total/messages", "topic/bytes/<topic>" or "topic/messages/<topic>".
BucketFactory = Callable[[str, float, float], TokenBucket]


class Sender(Protocol):
    """What the scheduler publishes through (the paho connection)."""

    @property
    def ready(self) -> bool: ...

    def outstanding_full(self, size: int) -> bool: ...

    def publish(self, topic: str, payload: Payload) -> None: ...


class Scheduler:
    """Every topic's state, its ready queue and buckets; the total buckets and queue."""

    def __init__(
        self,
        limits: RateLimitConfig | None,
        clock: Clock,
        metrics: UnitMetrics,
        builder: PayloadBuilder,
        sender: Sender,
        *,
        schedule: Callable[[float], None],
        block: bool,
        buckets: BucketFactory | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.metrics = metrics
        self.builder = builder
        self.sender = sender
        self.schedule = schedule  # make the timer wake by then
        self.block = block  # when_full: block; a full paho queue waits instead of dropping
        self.blocked = False  # a ready queue waits for room (block only)
        self.buckets: BucketFactory = buckets or (
            lambda _key, rate, capacity: TokenBucket(rate, capacity, clock)
        )
        self.topics: dict[str, TopicState] = {}
        self.active: dict[str, TopicState] = {}  # with a partial payload or a ready queue
        self.total_buckets: tuple[list[TokenBucket], list[TokenBucket]] = ([], [])
        self.total_queued = 0
        self.total_queue_limit = math.inf
        if limits is not None:
            burst = limits.burst_secs
            if limits.total_bytes_per_sec is not None:
                rate = limits.total_bytes_per_sec
                self.total_buckets[0].append(self.buckets("total/bytes", rate, rate * burst))
                self.total_queue_limit = rate * limits.queue_secs
            if limits.total_messages_per_sec is not None:
                rate = limits.total_messages_per_sec
                self.total_buckets[1].append(
                    self.buckets("total/messages", rate, max(1.0, rate * burst))
                )

    @property
    def queued_messages(self) -> int:
        return sum(len(state.ready) for state in self.active.values())

    def new_topic(self, name: str, now: float) -> TopicState:
        """A topic seen for the first time: its caps (the first matching filter's)."""
        state = TopicState(name, now, self.clock.time())
        limits = self.limits
        if limits is not None:
            bytes_cap, messages_cap = limits.topic_bytes_per_sec, limits.topic_messages_per_sec
            for topic_filter, caps in limits.topics.items():
                if mqtt.topic_matches_sub(topic_filter, name):
                    bytes_cap, messages_cap = caps.bytes_per_sec, caps.messages_per_sec
                    break
            byte_buckets, message_buckets = [], []
            burst = limits.burst_secs
            if bytes_cap is not None:
                byte_buckets.append(
                    self.buckets(f"topic/bytes/{name}", bytes_cap, bytes_cap * burst)
                )
                state.queue_limit = bytes_cap * limits.queue_secs
            if messages_cap is not None:
                message_buckets.append(
                    self.buckets(
                        f"topic/messages/{name}", messages_cap, max(1.0, messages_cap * burst)
                    )
                )
            total_bytes, total_messages = self.total_buckets
            state.limiter = Limiter(
                [*byte_buckets, *total_bytes], [*message_buckets, *total_messages]
            )
            state.bytes_cap, state.messages_cap = bytes_cap, messages_cap
        state.raw_limit = state.estimate.raw_limit(self.builder.max_payload(state))
        self.topics[name] = state
        return state

    def forget(self, name: str) -> None:
        del self.topics[name]
        self.active.pop(name, None)

    # ------------------------------------------------------------------ queues

    def enqueue(self, state: TopicState, payload: Payload) -> None:
        """Queue a payload for its topic. When the queue is full, queued payloads of a
        lower severity are dropped (``rate_limited``), lowest and newest first, to
        make room; if that cannot make room the payload itself is dropped.
        Accounting records are always queued, at the front."""
        if not payload.accounting and not self._make_room(state, payload):
            self.drop_payload(state, payload, "rate_limited")
            return
        if payload.accounting:
            # Before the topic's payloads, after its earlier records (in interval order).
            ready = state.ready
            ready.insert(
                next((i for i, p in enumerate(ready) if not p.accounting), len(ready)), payload
            )
        else:
            state.ready.append(payload)
        state.queued_bytes += payload.wire
        self.total_queued += payload.wire
        self.active[state.name] = state

    def _make_room(self, state: TopicState, payload: Payload) -> bool:
        """True when ``payload`` fits in the queues, after dropping queued payloads of
        a lower severity if need be (only when that is enough to make it fit)."""
        wire = payload.wire
        # Room left in the topic's queue (bytes, messages) and in the total one.
        topic_free = max(state.queue_limit, 2 * wire) - state.queued_bytes - wire
        total_free = max(self.total_queue_limit, 2 * wire) - self.total_queued - wire
        messages_free = (
            self._queue_messages(state) - len(state.ready) - 1
            if state.messages_cap is not None
            else math.inf
        )
        topic_full = topic_free < 0 or messages_free < 0
        if not topic_full and total_free >= 0:
            return True
        severity = payload.severity
        # Never one holding WARNING+ events (they are all kept): overdraw instead.
        below = min(severity, PROTECTED)
        # Candidates, lowest severity first and the newest first within one.
        owners = [state] if total_free >= 0 else list(self.active.values())
        if state not in owners:
            owners.append(state)
        candidates = sorted(
            (
                (queued.severity, -position, owner, queued)
                for owner in owners
                for position, queued in enumerate(owner.ready)
                if queued.severity < below and not queued.accounting
            ),
            key=lambda item: (item[0], item[1]),
        )
        chosen: list[tuple[TopicState, Payload]] = []
        for _, _, owner, queued in candidates:
            if topic_free >= 0 and total_free >= 0 and messages_free >= 0:
                break
            if owner is state:
                topic_free += queued.wire
                messages_free += 1
            elif total_free >= 0:
                continue  # another topic's payload frees room in the total queue only
            total_free += queued.wire
            chosen.append((owner, queued))
        if topic_free < 0 or total_free < 0 or messages_free < 0:
            if severity < PROTECTED or not self._overdraw(
                state, topic_free, total_free, messages_free
            ):
                return False
            chosen = []  # overdrawn instead: nothing else is given up for it
        for owner, queued in chosen:
            ready = owner.ready
            del ready[next(i for i, item in enumerate(ready) if item is queued)]
            owner.queued_bytes -= queued.wire
            self.total_queued -= queued.wire
            self.drop_payload(owner, queued, "rate_limited")
        return True

    def _overdraw(
        self, state: TopicState, topic_free: float, total_free: float, messages_free: float
    ) -> bool:
        """Whether a payload holding WARNING+ events may go over the full queues.

        Payloads mix severities, so after a surge (the samplers not caught up yet)
        a queue can be full of payloads that each hold a WARNING: none of a lower
        severity to give up. WARNING+ events are kept (the samplers leave them the
        budget), so such a payload may take the queues up to twice their limits;
        beyond that it is dropped and counted like any other."""
        return (
            topic_free + state.queue_limit >= 0
            and total_free + self.total_queue_limit >= 0
            and (messages_free >= 0 or messages_free + self._queue_messages(state) >= 0)
        )

    def _queue_messages(self, state: TopicState) -> float:
        limits = self.limits
        cap = state.messages_cap or 0.0
        return max(1.0, cap * limits.queue_secs) if limits is not None else math.inf

    def drop_payload(self, state: TopicState, payload: Payload, reason: DropReason) -> None:
        if payload.events:
            self.metrics.drop(payload.events, reason)
        if reason == "rate_limited" and payload.by_level is not None:
            rate_limited = state.rate_limited
            for index, events in enumerate(payload.by_level):
                rate_limited[index] += events

    def _pop(self, state: TopicState) -> Payload:
        payload = state.ready.popleft()
        state.queued_bytes -= payload.wire
        self.total_queued -= payload.wire
        return payload

    def drop_queued(self, reason: DropReason) -> None:
        """Give up every partial payload and every queue (counted with ``reason``)."""
        for state in list(self.active.values()):
            state.lines, state.levels, state.raw, state.deadline = [], [], 0, None
            while state.ready:
                self.drop_payload(state, self._pop(state), reason)
        self.active.clear()

    # ------------------------------------------------------------------ buckets

    def pump(self, state: TopicState) -> None:
        """Publish from the topic's ready queue while connected, allowed and not full."""
        ready = state.ready
        limiter = state.limiter
        sender = self.sender
        state.wake_at = None
        while ready:
            payload = ready[0]
            if not sender.ready:
                while ready:
                    self.drop_payload(state, self._pop(state), "not_connected")
                break
            charge = False
            if limiter:
                wait = limiter.wait_secs(payload.wire)
                if wait == math.inf:  # bigger than a bucket: it can never go ...
                    if not payload.accounting:
                        self.drop_payload(state, self._pop(state), "rate_limited")
                        continue
                    # ... except a record, which goes once the buckets are full, into debt.
                    wait, charge = limiter.wait_full_secs(), True
                if wait > 0:
                    state.wake_at = self.clock.monotonic() + wait
                    self.schedule(state.wake_at)
                    break
            if sender.outstanding_full(len(payload.data)):
                if self.block:
                    self.blocked = True
                    break
                self.drop_payload(state, self._pop(state), "broker_backpressure")
                continue
            if charge:
                limiter.charge(payload.wire)
            elif limiter:
                limiter.allow(payload.wire)
            sender.publish(state.name, self._pop(state))
        if not ready and not state.lines:
            self.active.pop(state.name, None)

    # ------------------------------------------------------------------ accounting records

    def account(
        self, unit: str, state: TopicState, now: float, wall: float, *, pump: bool = True
    ) -> None:
        """Queue the topic's accounting record (when it lost events), publish it unless
        ``pump`` is False, and start a new interval."""
        sampled, rate_limited = state.sampled, state.rate_limited
        if any(sampled) or any(rate_limited):
            record = accounting_record(
                unit=unit,
                start_wall=state.interval_start_wall,
                end_wall=wall,
                suppressed={"sampled": sampled, "rate_limited": rate_limited},
                kept=[max(0, p - r) for p, r in zip(state.passed, rate_limited, strict=True)],
                sample_rates={
                    LEVEL_NAMES[i]: state.factors[i]
                    for i in range(LEVELS)
                    if state.rates[i] is not None
                },
                topic=state.name,
            )
            line = dumps_event(record)
            if line is not None:
                self.enqueue(state, self.builder.record(state, line))
                if pump:
                    self.pump(state)
        state.sampled, state.rate_limited, state.passed = [0] * LEVELS, [0] * LEVELS, [0] * LEVELS
        state.interval_start, state.interval_start_wall = now, wall

    def send_records(self) -> None:
        """At the close deadline: publish the accounting records still queued, whatever
        the caps (charged to the buckets), so subscribers learn what they lost."""
        if not self.sender.ready:
            return
        for state in list(self.active.values()):
            records = [payload for payload in state.ready if payload.accounting]
            if not records:
                continue
            state.ready = deque(payload for payload in state.ready if not payload.accounting)
            for record in records:
                state.queued_bytes -= record.wire
                self.total_queued -= record.wire
                if state.limiter:
                    state.limiter.charge(record.wire)
                self.sender.publish(state.name, record)
