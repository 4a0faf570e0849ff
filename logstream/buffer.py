"""Bounded buffers of batches and the count/time batching policy.

:class:`BatchBuffer` is the one queue type of the runtime: the ingest buffer
between inputs and filters, and each sink's own buffer. It is bounded in
*events* (not batches) and offers the three ways a producer can meet a full
buffer:

- ``await put(batch)``: wait for room (``when_full: block``);
- ``offer(batch)``: refuse and let the caller count the drop (``drop_newest``);
- ``push(batch)`` then ``call_when_drained(resume)``: for protocol callbacks
  that cannot await (a TCP connection takes the batch it has already read,
  then pauses reading until the buffer drains below half).

Inputs that acknowledge (beats ACKs, file checkpoints) need to know when
their events are safe: ``accepted`` is the position just past the last event
pushed, and ``call_when_safe(position, callback)`` calls back once the
consumer has declared everything before ``position`` safe (``mark_safe``):
the pipeline does so once it has handed the events to every sink (to a disk
spool, for a spooled sink).

:class:`Batcher` decides when a sink's pending events form a batch: by count
or by the age of the oldest pending event. It takes the time as an argument,
so tests drive it with any clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable

from logstream.clock import Clock, SystemClock
from logstream.event import Batch


class BufferClosed(Exception):
    """Raised by ``get`` once the buffer is closed and empty, and by ``put`` after close."""


class BatchBuffer:
    """A FIFO of batches bounded in events. One consumer, any number of producers."""

    def __init__(
        self, max_events: int, *, clock: Clock | None = None, safe_when_taken: bool = True
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, value: {max_events}")
        self.max_events = max_events
        self._low_water = max_events // 2
        self._batches: deque[Batch] = deque()
        self._events = 0
        self._closed = False
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._on_drained: list[Callable[[], None]] = []
        self._clock = clock or SystemClock()
        # Seconds producers spent waiting in put(); exported as blocked time.
        self.blocked_secs = 0.0
        # Positions in the stream of events: how many were ever pushed, taken, and
        # declared safe by the consumer; callbacks waiting for a safe position.
        self.accepted = 0
        self.taken = 0
        self.safe = 0
        self._safe_waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._safe_order = itertools.count()
        # True: events are safe once taken by the consumer. The pipeline says False
        # for its ingest buffer and calls mark_safe once the sinks have the events.
        self._safe_when_taken = safe_when_taken
        # True when "safe" means "on disk" (a disk ingest queue): inputs that answer a
        # client per request (http) then wait for it before answering.
        self.durable = False

    def __len__(self) -> int:
        """Events in the buffer."""
        return self._events

    @property
    def full(self) -> bool:
        return self._events >= self.max_events

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, batch: Batch) -> None:
        """Append ``batch`` whatever the level. Callers check ``full`` afterwards."""
        if self._closed:
            raise BufferClosed("buffer is closed")
        if not batch:
            return
        self._batches.append(batch)
        self._events += len(batch)
        self.accepted += len(batch)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def offer(self, batch: Batch) -> bool:
        """Append ``batch`` if the buffer is not full; return whether it was taken."""
        if self._events >= self.max_events or self._closed:
            return False
        self.push(batch)
        return True

    async def put(self, batch: Batch) -> None:
        """Append ``batch``, first waiting while the buffer is full.

        Raises :class:`BufferClosed` if the buffer is closed before there is room.
        """
        if self._events >= self.max_events and not self._closed:
            started = self._clock.monotonic()
            try:
                while self._events >= self.max_events and not self._closed:
                    waiter = asyncio.get_running_loop().create_future()
                    self._putters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._putters:
                            self._putters.remove(waiter)
            finally:
                self.blocked_secs += self._clock.monotonic() - started
        self.push(batch)

    def call_when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the buffer falls to half full or closes."""
        if self._closed or self._events <= self._low_water:
            callback()
        else:
            self._on_drained.append(callback)

    async def get(self, max_events: int, timeout_secs: float | None = None) -> Batch | None:
        """Take up to ``max_events`` events, waiting for the first one.

        Whole batches are merged while they fit; a batch larger than
        ``max_events`` is split. Returns ``None`` when ``timeout_secs`` passes
        with the buffer empty. Raises :class:`BufferClosed` once closed and empty.
        """
        while not self._batches:
            if self._closed:
                raise BufferClosed("buffer is closed")
            self._getter = asyncio.get_running_loop().create_future()
            try:
                if timeout_secs is None:
                    await self._getter
                else:
                    try:
                        await asyncio.wait_for(self._getter, timeout_secs)
                    except TimeoutError:
                        return None
            finally:
                self._getter = None
        return self._take(max_events)

    def get_nowait(self, max_events: int) -> Batch | None:
        """Like ``get`` but returns ``None`` at once when the buffer is empty."""
        if not self._batches:
            return None
        return self._take(max_events)

    def _take(self, max_events: int) -> Batch:
        batches = self._batches
        first = batches.popleft()
        if len(first) > max_events:
            batches.appendleft(first[max_events:])
            first = first[:max_events]
        elif batches and len(first) + len(batches[0]) <= max_events:
            out = list(first)
            while batches and len(out) + len(batches[0]) <= max_events:
                out.extend(batches.popleft())
            first = out
        self._events -= len(first)
        self.taken += len(first)
        if self._events <= self._low_water:
            self._wake_producers()
        if self._safe_when_taken:
            self.mark_safe(self.taken)
        return first

    def _wake_producers(self) -> None:
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._on_drained:
            callbacks, self._on_drained = self._on_drained, []
            for callback in callbacks:
                callback()

    def call_when_safe(self, position: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every event before ``position`` (a value of
        ``accepted``) is safe; at once if it already is. Never called for events
        discarded by ``clear`` (they were not safe)."""
        if position <= self.safe:
            callback()
        else:
            heapq.heappush(self._safe_waiters, (position, next(self._safe_order), callback))

    async def wait_safe(self, position: int) -> None:
        """Wait until every event before ``position`` is safe (see ``call_when_safe``)."""
        if position <= self.safe:
            return
        done = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self.call_when_safe(position, wake)
        await done

    def mark_safe(self, position: int) -> None:
        """The consumer's word: every event before ``position`` is safe."""
        if position <= self.safe:
            return
        self.safe = position
        waiters = self._safe_waiters
        while waiters and waiters[0][0] <= position:
            heapq.heappop(waiters)[2]()

    def close(self) -> None:
        """No more puts; ``get`` drains what is left, then raises :class:`BufferClosed`."""
        self._closed = True
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        self._wake_producers()

    def clear(self) -> int:
        """Discard everything buffered; return the number of events discarded."""
        dropped = self._events
        self._batches.clear()
        self._events = 0
        self._wake_producers()
        return dropped


class Batcher:
    """Groups events into batches of at most ``max_events``, flushed by age.

    ``add`` returns a batch when the count is reached; ``timeout`` says how long
    the consumer may wait for more before calling ``take`` on what is pending.
    """

    def __init__(self, max_events: int, max_delay_secs: float) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, value: {max_events}")
        if max_delay_secs < 0:
            raise ValueError(f"max_delay_secs must not be negative, value: {max_delay_secs}")
        self.max_events = max_events
        self.max_delay_secs = max_delay_secs
        self._pending: Batch = []
        self._deadline = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def room(self) -> int:
        """How many more events fit in the pending batch."""
        return self.max_events - len(self._pending)

    def add(self, batch: Batch, now: float) -> Batch | None:
        """Add events; return a complete batch when the count or the deadline is reached."""
        if not self._pending:
            if len(batch) >= self.max_events or self.max_delay_secs == 0:
                return batch
            self._deadline = now + self.max_delay_secs
            # Batches are shared between sinks: copy before extending.
            self._pending = list(batch)
        else:
            self._pending.extend(batch)
        if len(self._pending) >= self.max_events or now >= self._deadline:
            return self.take()
        return None

    def timeout(self, now: float) -> float | None:
        """Seconds until pending events are due; ``None`` when nothing is pending."""
        if not self._pending:
            return None
        return max(0.0, self._deadline - now)

    def take(self) -> Batch:
        """Everything pending, as one batch (possibly empty)."""
        batch, self._pending = self._pending, []
        return batch
