"""The sink driver: ties the config, the payload builder, the sampler, the scheduler
and the paho connection together, and runs the timer task.

How a batch travels::

    write(batch) -> group events by topic -> per topic:
        [Sampler.sample: keep ratios per severity, only with rate_limit]
        -> JSON lines -> PayloadBuilder (max bytes / events / delay; the timer
           task seals partial payloads) -> framed payloads
        -> Scheduler: ready queue -> token buckets (topic, total)
        -> Connection.publish -> paho -> on_publish -> events_out
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

from logstream.clock import Clock
from logstream.event import Batch, Event
from logstream.payload import framer, serialise
from logstream.redis_budget import BackgroundBudget
from logstream.sampling import LEVEL_NAMES, LEVELS
from logstream.units import BuildContext, Sink

from .adaptive import Sampler, Share
from .config import MqttSinkConfig
from .connection import Connection
from .fanout import Fanout, connections
from .payloads import Numbering, PayloadBuilder, Sealed, default_producer
from .scheduler import BucketFactory, Scheduler
from .shared import host_buckets, open_budget
from .state import TopicState, head_severity
from .timer import WakeTimer
from .topics import compile_topic

log = logging.getLogger("logstream.sinks.mqtt")

# A topic with nothing pending and no event for this long is forgotten (its buckets too).
_TOPIC_IDLE_SECS = 60.0
# How often the timer task looks at every topic (accounting records, forgetting).
_SWEEP_SECS = 1.0


class MqttSink(Sink):
    def __init__(
        self,
        config: MqttSinkConfig,
        name: str,
        ctx: BuildContext,
        *,
        buckets: BucketFactory | None = None,
    ) -> None:
        super().__init__(name, ctx.registry.unit(name, "sink"))
        self.config = config
        brokers = config.brokers
        self.endpoint = brokers[0].endpoint
        self._topic_of = compile_topic(config.topic, config.missing)
        self._group = self._group_constant if "{" not in config.topic else self._group_by_topic
        self._clock: Clock = ctx.clock
        self._timer = WakeTimer(
            name, self._clock, self._service, on_error=self._timer_failed, retry_secs=_SWEEP_SECS
        )
        numbering = Numbering(config.producer or default_producer()) if config.numbered else None
        self.builder = PayloadBuilder(
            config, framer(config.encoding, config.compression_level), numbering
        )
        self.connections = connections(
            config, name, ctx, self.metrics, on_connected=self._on_connected, on_sent=self._on_sent
        )
        self.connection = self.connections[0]
        self.sender: Connection | Fanout = (
            Fanout(self.connections, self.metrics) if len(brokers) > 1 else self.connection
        )
        # Bandwidth control, chosen here: without caps nothing is sampled or tracked.
        limits = config.rate_limit if config.rate_limit and config.rate_limit.any_caps else None
        self._limits = limits
        if limits is not None:
            self.metrics.rate_caps = limits.byte_caps()  # logstream_rate_cap_bytes_per_second
        share: Share | None = None
        self.budget, parts = (
            open_budget(limits, ctx, name, self.metrics) if buckets is None else (None, 1)
        )
        if self.budget is not None:
            buckets, share = host_buckets(self.budget, self._clock), self.budget.share
        self.scheduler = Scheduler(
            limits,
            self._clock,
            self.metrics,
            self.builder,
            self.sender,
            schedule=self._timer.schedule,
            block=config.when_full == "block",
            buckets=buckets,
        )
        now = self._clock.monotonic()
        self.sampler = (
            Sampler(limits, self.builder.batched, self.metrics, now, share, parts)
            if limits
            else None
        )
        self._add: Callable[[TopicState, list[Event], float], None] = (
            self._add_tracked if self.sampler is not None else self._add_plain
        )
        self._next_sweep = now + _SWEEP_SECS

    # ------------------------------------------------------------------ state, for tests and health

    @property
    def connected(self) -> bool:
        """Connected to a broker (with several: to at least one)."""
        return self.sender.connected

    @property
    def producer(self) -> str | None:
        """The producer id in numbered messages (None: messages are not numbered)."""
        numbering = self.builder.numbering
        return numbering.producer if numbering is not None else None

    @property
    def outstanding_messages(self) -> int:
        return sum(len(connection.pending) for connection in self.connections)

    @property
    def outstanding_bytes(self) -> int:
        return sum(connection.pending_bytes for connection in self.connections)

    @property
    def queued_messages(self) -> int:
        """Framed payloads waiting for tokens or for room."""
        return self.scheduler.queued_messages

    def keep_ratios(self, topic: str) -> dict[str, float]:
        """The current keep ratio of each severity on ``topic`` (1.0: all kept)."""
        state = self.scheduler.topics.get(topic)
        ratios = state.ratios if state is not None else [1.0] * LEVELS
        return dict(zip(LEVEL_NAMES, ratios, strict=True))

    async def wait_connected(self, timeout_secs: float, *, every: bool = False) -> bool:
        """Wait until a broker (``every``: each broker) is connected; False if not in time."""
        waits = [connection.wait_connected(timeout_secs) for connection in self.connections]
        if every or len(waits) == 1:
            return all(await asyncio.gather(*waits))
        tasks = [asyncio.ensure_future(wait) for wait in waits]
        try:
            for done in asyncio.as_completed(tasks):
                if await done:
                    return True
            return False
        finally:
            for task in tasks:
                task.cancel()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start paho's network thread connecting in the background, and the timer task.

        Waits up to ``connect_wait_secs`` for the first connection so the first
        events are not dropped, then returns connected or not (paho goes on
        trying with a backoff).
        """
        config = self.config
        for connection in self.connections:
            connection.start()
        self._timer.start()
        if config.connect_wait_secs and not await self.wait_connected(config.connect_wait_secs):
            log.warning(
                "sink %s: not connected to %s after %.1f s; dropping events (not_connected) "
                "until it is",
                self.name,
                " or ".join(connection.where() for connection in self.connections),
                config.connect_wait_secs,
            )

    async def write(self, batch: Batch) -> None:
        """Sample, encode and queue the batch per topic, publishing what the caps allow
        now. Never waits on the network or on a rate limit; with ``when_full:
        block`` it waits for paho to take messages (the pipeline's backpressure)."""
        connection, scheduler = self.sender, self.scheduler
        if not connection.ready:
            self.metrics.drop(len(batch), "not_connected")
            return
        now = self._clock.monotonic()
        sampler = self.sampler
        if sampler is not None and sampler.first_window:
            self._timer.schedule(sampler.begin_windows(now, scheduler.topics.values()))
        for topic, events in self._group(batch).items():
            if connection.full() and not (
                scheduler.block and await connection.room_for(1)
            ):  # do not even encode
                self.metrics.drop(len(events), "broker_backpressure")
                continue
            state = scheduler.topics.get(topic) or self._new_topic(topic, now)
            state.last_used = now
            self._add(state, events, now)
            scheduler.pump(state)
        if scheduler.blocked:
            await self._unblock()

    def _new_topic(self, name: str, now: float) -> TopicState:
        state = self.scheduler.new_topic(name, now)
        if self.sampler is not None:
            self.sampler.attach(state)
        return state

    def _add_plain(self, state: TopicState, events: list[Event], now: float) -> None:
        """No caps: every event goes (no levels tracked, nothing sampled)."""
        lines = serialise(events, self.metrics)
        if not self.builder.batched:
            self._queue(state, self.builder.singles(state, lines, None))
            return
        self._collect(state, lines, None, now)

    def _add_tracked(self, state: TopicState, events: list[Event], now: float) -> None:
        """Caps: count offered events per severity, sample, add ``sample_rate``."""
        assert self.sampler is not None
        lines, levels = self.sampler.sample(state, events)
        if self.builder.batched:
            self._collect(state, lines, levels, now)
        else:
            self._queue(state, self.builder.singles(state, lines, levels))

    def _collect(
        self, state: TopicState, lines: list[bytes], levels: list[int] | None, now: float
    ) -> None:
        self._queue(state, self.builder.collect(state, lines, levels, now))
        if state.deadline is not None:  # a partial payload waits: the timer seals it
            self.scheduler.active[state.name] = state
            self._timer.schedule(state.deadline)

    def _queue(self, state: TopicState, sealed: list[Sealed]) -> None:
        """Measure what sealed payloads cost (for the samplers) and queue them."""
        sampler, scheduler = self.sampler, self.scheduler
        for payload, raw_by_level in sealed:
            if sampler is not None and payload.by_level is not None:
                sampler.measure(state, payload.wire, payload.by_level, raw_by_level)
            scheduler.enqueue(state, payload)

    async def _unblock(self) -> None:
        """``when_full: block``: wait until paho took what the ready queues hold."""
        connection, scheduler = self.sender, self.scheduler
        while scheduler.blocked and connection.connected and not connection.closing:
            connection.room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.room.wait(), 1.0)
            scheduler.blocked = False
            for state in list(scheduler.active.values()):
                scheduler.pump(state)

    def _group_by_topic(self, batch: Batch) -> dict[str, list[Event]]:
        topic_of = self._topic_of
        groups: dict[str, list[Event]] = {}
        for event in batch:
            topic = topic_of(event)
            group = groups.get(topic)
            if group is None:
                groups[topic] = [event]
            else:
                group.append(event)
        return groups

    def _group_constant(self, batch: Batch) -> dict[str, list[Event]]:
        return {self.config.topic: batch}

    async def close(self) -> None:
        """Send what is batched and queued, then wait for outstanding messages, then
        disconnect; all within ``close_timeout_secs``.

        Partial payloads are sealed and every topic that lost events gets its
        accounting record; queued payloads still go only as fast as the caps
        allow. At the deadline a topic that lost more events since then gets
        one more record, the queued records are published whatever the caps,
        and what is left is counted as dropped (``shutdown``) and logged.
        Returns within ``close_timeout_secs`` + 6 s at most, also when the
        broker has stopped reading.
        """
        connections = [c for c in self.connections if c.client is not None]
        if not connections:
            await self._close_budget()
            return
        sender = self.sender
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.close_timeout_secs
        try:
            self._flush_all()
            while self.scheduler.active and sender.connected and loop.time() < deadline:
                self._timer.wake()  # the timer task pumps as tokens and room come
                await asyncio.sleep(0.01)
        finally:  # also when cancelled: the timer task must not outlive the sink
            await self._timer.stop()
            self._last_records()
            self.scheduler.send_records()
            clients = [(connection, connection.client) for connection in connections]
            for connection in connections:
                connection.client = None
            self.scheduler.drop_queued("shutdown")
        try:
            for connection in connections:
                # QoS 1: paho sends what is pending again after it reconnects (a broker
                # may also drop a client after refusing a publish), so wait while
                # disconnected too; QoS 0 messages were lost at the disconnect.
                if connection.pending and (connection.connected or self.config.qos > 0):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            connection.idle.wait(), max(0.0, deadline - loop.time())
                        )
        finally:  # also when cancelled: paho's threads must not outlive the sink
            stoppers = [
                (connection, connection.begin_stop(client))
                for connection, client in clients
                if client is not None
            ]
        for connection, stopper in stoppers:
            await connection.wait_stopped(stopper)
            self._closed(connection)
        await self._close_budget()

    async def _close_budget(self) -> None:
        budget = self.budget
        if isinstance(budget, BackgroundBudget):
            await budget.aclose()
        elif budget is not None:
            budget.close()

    def _closed(self, connection: Connection) -> None:
        """After paho's thread ended: what it reported, and what it never sent."""
        connection.drain()  # what paho reported before its thread ended
        connection.connected = False
        connection.connected_event.clear()
        if connection.pending:
            messages = len(connection.pending)
            events = connection.lose_pending("shutdown")
            log.warning(
                "sink %s: %d events in %d messages were not confirmed sent to %s within "
                "close_timeout_secs=%s; counted as dropped (shutdown)",
                self.name,
                events,
                messages,
                connection.where(),
                self.config.close_timeout_secs,
            )

    @property
    def _accounting(self) -> bool:
        """Whether the sink publishes accounting records."""
        return self._limits is not None and bool(self._limits.accounting_interval_secs)

    def _flush_all(self) -> None:
        """Seal every partial payload, emit due accounting records, pump every queue.

        Every topic is sealed before any record is made: sealing one topic can
        push another topic's queued payloads out (``_make_room``), and those
        drops belong in that topic's record."""
        now, wall = self._clock.monotonic(), self._clock.time()
        scheduler = self.scheduler
        states = list(scheduler.topics.values())
        for state in states:
            self._queue(state, self.builder.seal(state))
        for state in states:
            if self._accounting:
                scheduler.account(self.name, state, now, wall, pump=False)
            scheduler.pump(state)

    def _last_records(self) -> None:
        """At the close deadline, before ``send_records``: a record for each topic that
        lost events after its record from ``_flush_all`` (a payload pushed out of a
        full queue or over a bucket while closing), so the records add up to the
        metrics. Queues are not pumped: nothing may be counted after this."""
        if not self._accounting:
            return
        now, wall = self._clock.monotonic(), self._clock.time()
        for state in list(self.scheduler.topics.values()):
            self.scheduler.account(self.name, state, now, wall, pump=False)

    # ------------------------------------------------------------------ hooks from the connection

    def _on_connected(self, max_packet: int | None) -> None:
        # With several brokers, payloads fit the smallest maximum any of them announced.
        announced = [c.broker_max_packet for c in self.connections if c.broker_max_packet]
        self.builder.broker_max_packet = min(announced) if announced else max_packet

    def _on_sent(self) -> None:
        if self.scheduler.blocked:
            self._timer.wake()  # the timer task pumps what waits for room

    # ------------------------------------------------------------------ the timer task

    def _timer_failed(self) -> None:
        self.metrics.errors += 1

    def _service(self, now: float) -> float:
        """One round of the timer task; returns when the next one is due."""
        scheduler, sampler = self.scheduler, self.sampler
        window_end = sampler.window_end if sampler is not None else math.inf
        if sampler is not None and now >= window_end:
            sampler.control(now, scheduler.topics.values(), scheduler.total_queued)
            window_end = sampler.window_end
        if now >= self._next_sweep:
            self._sweep(now)
        next_at = min(self._next_sweep, window_end)
        active = list(scheduler.active.values())
        if self._limits is not None:
            # Higher severities take the tokens first (stable: round robin among equals).
            active.sort(key=head_severity, reverse=True)
        for state in active:
            if state.deadline is not None and now >= state.deadline:
                self._queue(state, self.builder.seal(state))
            if state.ready:
                before = len(state.ready)
                scheduler.pump(state)
                if len(state.ready) < before and state.name in scheduler.active:
                    # Round robin: a topic that just sent goes behind the others
                    # (they share the total bucket).
                    del scheduler.active[state.name]
                    scheduler.active[state.name] = state
            if state.deadline is not None:
                next_at = min(next_at, state.deadline)
            if state.ready and state.wake_at is not None:
                next_at = min(next_at, state.wake_at)
        return next_at

    def _sweep(self, now: float) -> None:
        """Accounting records that are due; forget topics idle for a while."""
        self._next_sweep = now + _SWEEP_SECS
        limits = self._limits
        interval = limits.accounting_interval_secs if limits is not None else 0.0
        wall = self._clock.time()
        scheduler = self.scheduler
        for name, state in list(scheduler.topics.items()):
            if interval and now - state.interval_start >= interval:
                scheduler.account(self.name, state, now, wall)
            if (
                not state.ready
                and not state.lines
                and now - state.last_used > _TOPIC_IDLE_SECS
                and not any(state.sampled)
                and not any(state.rate_limited)
            ):
                scheduler.forget(name)
