"""The runtime: inputs -> ingest buffer -> filter task -> one buffer and task per sink.

::

    tcp ─┐                               ┌─> [buffer] -> elasticsearch task
    udp ─┼─> [ingest buffer] -> filters ─┼─> [buffer] -> mqtt task
         ┘                               └─> [buffer] -> file task

Every arrow carries batches. Every buffer is bounded in events. A sink with
``when_full: block`` makes the filter task wait when its buffer is full; the
ingest buffer then fills and the inputs pause reading (TCP) or drop and count
(UDP). A sink with ``drop_newest`` never makes anyone wait: what does not fit
is counted as dropped. A slow sink therefore never stalls another sink
beyond its own buffer, unless it is a ``block`` sink, whose whole point is to
stall the inputs rather than lose data.

A sink with a ``when`` condition is offered only the events that match it
(:class:`SinkRunner`); the others are not drops, they were never its own.
A filter with ``when`` sees only the matching events, in stream order.

With ``pipeline.queue.type: disk`` a :class:`~logstream.queue.DiskQueue` sits
between the ingest buffer and the filter task: events are safe (inputs may
acknowledge) once on disk, and the queue is acknowledged once every sink's
``write`` returned for them (each runner's ``offered``/``done`` positions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from logstream.buffer import BatchBuffer, Batcher, BufferClosed
from logstream.clock import Clock, SystemClock
from logstream.dlq import FilterDeadLetters
from logstream.event import Batch, Event
from logstream.listeners import bind_error_text
from logstream.metrics import Registry, UnitMetrics
from logstream.queue import DiskQueue
from logstream.shutdown import ShutdownReport
from logstream.units import Filter, Input, Sink, WhenFull

log = logging.getLogger(__name__)


class InputStartError(OSError):
    """An input could not start (bind): the message names the input and its address."""

    def __str__(self) -> str:
        return str(self.strerror)


async def start_input(unit: Input, ingest: BatchBuffer) -> None:
    """``unit.start``, with a bind error that names the input and the address."""
    try:
        await unit.start(ingest)
    except InputStartError:
        raise
    except OSError as error:
        listen = getattr(getattr(unit, "config", None), "listen", None)
        text = bind_error_text(unit.name, listen if isinstance(listen, str) else None, error)
        raise InputStartError(error.errno, text) from error


@dataclass
class SinkSettings:
    """The runtime's settings around one sink (from :class:`~logstream.units.SinkConfig`)."""

    buffer_max_events: int = 20_000
    when_full: WhenFull = "block"
    batch_max_events: int = 1_000
    batch_max_delay_secs: float = 0.2
    # The sink's ``when`` condition: only matching events are offered to it.
    when: Callable[[Event], bool] | None = None


class SinkRunner:
    """One sink with its own bounded buffer, batching and task.

    With a ``when`` condition, ``offer`` first selects the matching events;
    the others are counted in ``metrics.events_unselected`` (they were never
    the sink's, so they are neither in ``events_in`` nor dropped). Without
    one, ``offer`` is the plain buffer path: no per-batch cost.
    """

    def __init__(self, sink: Sink, settings: SinkSettings, clock: Clock | None = None) -> None:
        self.sink = sink
        self.settings = settings
        self.metrics: UnitMetrics = sink.metrics
        self._clock = clock or SystemClock()
        self.buffer = BatchBuffer(settings.buffer_max_events, clock=self._clock)
        self._batcher = Batcher(settings.batch_max_events, settings.batch_max_delay_secs)
        self.metrics.buffer_depth = lambda: len(self.buffer) + len(self._batcher)
        self._task: asyncio.Task[None] | None = None
        self._in_write = 0  # events inside the current write(), for shutdown reports
        # Events counted in that never reached the buffer: an offer cancelled at shutdown.
        self._stranded = 0
        # Positions for the disk queue: events offered to this sink, and events whose
        # write() returned or that were counted dropped (both in the sink's own order).
        self.offered = 0
        self.done = 0
        # Pick the offer path once (no per-batch branch on the policy or the condition).
        offer = self._offer_blocking if settings.when_full == "block" else self._offer_dropping
        if sink.spooled:
            # The sink keeps its own buffer on disk: write to it at once, so that the
            # events are on disk when the pipeline calls them safe.
            offer = self._offer_spooled
        self.offer = offer if settings.when is None else self._selecting(offer, settings.when)

    @property
    def name(self) -> str:
        return self.sink.name

    async def start(self) -> None:
        await self.sink.start()
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.name}")

    async def _offer_blocking(self, batch: Batch) -> None:
        self.metrics.events_in += len(batch)
        try:
            await self.buffer.put(batch)
        except asyncio.CancelledError:  # stop's deadline passed while it waited for room
            self._stranded += len(batch)
            raise
        self.offered += len(batch)
        self.metrics.blocked_secs = self.buffer.blocked_secs

    async def _offer_spooled(self, batch: Batch) -> None:
        self.metrics.events_in += len(batch)
        self.offered += len(batch)
        await self._write(batch)

    async def _offer_dropping(self, batch: Batch) -> None:
        self.metrics.events_in += len(batch)
        self.offered += len(batch)
        if not self.buffer.offer(batch):
            self.metrics.drop(len(batch), "buffer_full")
            self.done += len(batch)

    def _selecting(
        self, offer: Callable[[Batch], Awaitable[None]], when: Callable[[Event], bool]
    ) -> Callable[[Batch], Awaitable[None]]:
        select = self._select

        async def offer_selected(batch: Batch) -> None:
            selected = select(batch, when)
            if selected:
                await offer(selected)

        return offer_selected

    def _select(self, batch: Batch, when: Callable[[Event], bool]) -> Batch:
        """The events of ``batch`` this sink takes; the others are counted unselected."""
        selected = [event for event in batch if when(event)]
        self.metrics.events_unselected += len(batch) - len(selected)
        return selected

    async def _run(self) -> None:
        batcher = self._batcher
        clock = self._clock
        while True:
            try:
                got = await self.buffer.get(batcher.room, batcher.timeout(clock.monotonic()))
            except BufferClosed:
                await self._write(batcher.take())
                return
            ready = batcher.take() if got is None else batcher.add(got, clock.monotonic())
            if ready:
                await self._write(ready)

    async def _write(self, batch: Batch) -> None:
        if not batch:
            return
        self._in_write = len(batch)
        try:
            await self.sink.write(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sink %s: write of %d events failed; dropped", self.name, len(batch))
            self.metrics.drop(len(batch), "sink_error")
        finally:
            self._in_write = 0
        self.done += len(batch)

    def strand(self, batch: Batch) -> None:
        """Count in a batch that stop kept from being offered (lost at shutdown)."""
        when = self.settings.when
        if when is not None:
            batch = self._select(batch, when)
        self.metrics.events_in += len(batch)
        self._stranded += len(batch)

    async def drain(self) -> None:
        """Close the buffer and wait until everything in it has been written."""
        self.buffer.close()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def abort(self) -> int:
        """Cancel the task; count and return the events that were never written."""
        lost = self.buffer.clear() + len(self._batcher.take()) + self._stranded
        self._stranded = 0
        if self._task is not None and not self._task.done():
            lost += self._in_write
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if lost:
            self.metrics.drop(lost, "shutdown")
        return lost

    async def close(self) -> None:
        try:
            await self.sink.close()
        except Exception:
            log.exception("sink %s: close failed", self.name)


class Pipeline:
    """Owns the units, the buffers and the tasks between them."""

    def __init__(
        self,
        inputs: Sequence[Input],
        filters: Sequence[Filter],
        sinks: Sequence[SinkRunner],
        *,
        registry: Registry | None = None,
        ingest_max_events: int = 8_192,
        filter_batch_max_events: int = 1_024,
        tick_secs: float = 0.1,
        clock: Clock | None = None,
        dead_letter_dir: Path | None = None,
        queue: DiskQueue | None = None,
    ) -> None:
        if not sinks:
            raise ValueError("a pipeline needs at least one sink")
        self.inputs = list(inputs)
        self.filters = list(filters)
        self.sinks = list(sinks)
        self.registry = registry or Registry()
        self.clock = clock or SystemClock()
        self.ingest = BatchBuffer(ingest_max_events, clock=self.clock, safe_when_taken=False)
        self.metrics = self.registry.unit("ingest", "pipeline")
        self.metrics.buffer_depth = lambda: len(self.ingest)
        self._filter_batch_max_events = filter_batch_max_events
        self._tick_secs = tick_secs
        # The persisted ingest queue (pipeline.queue.type: disk), between ingest and filters.
        self.queue = queue
        # Batches of fail-closed filters that raised (None: counted and logged only).
        self.dead_letters = FilterDeadLetters(dead_letter_dir) if dead_letter_dir else None
        self._filter_task: asyncio.Task[None] | None = None
        self._started_inputs: list[Input] = []
        self._started_sinks: list[SinkRunner] = []
        self.running = False
        # A reload (logstream.reload): a change the filter task makes between two
        # batches, and the reload in progress (awaited by stop).
        self._between_batches: Callable[[], Awaitable[None]] | None = None
        self.reloading: asyncio.Task[object] | None = None

    async def start(self) -> None:
        """Start sinks first, then the filter task, then the inputs.

        If anything fails to start, what was started is stopped and the error raised.
        """
        try:
            for runner in self.sinks:
                await runner.start()
                self._started_sinks.append(runner)
            if self.queue is not None:
                self.queue.open()
                self.queue.start(self.ingest)
                self.ingest.durable = True
                filters = self._run_filters_from_queue(self.queue)
            else:
                filters = self._run_filters()
            self._filter_task = asyncio.create_task(filters, name="filters")
            for unit in self.inputs:
                self._started_inputs.append(unit)
                await start_input(unit, self.ingest)
        except BaseException:
            await self.stop(timeout_secs=5.0)
            raise
        self.running = True

    async def _run_filters(self) -> None:
        ingest = self.ingest
        max_events = self._filter_batch_max_events
        tick_secs = self._tick_secs
        next_tick = self.clock.monotonic() + tick_secs
        while True:
            if self._between_batches is not None:
                await self._change_between_batches()
            try:
                batch = await ingest.get(max_events, tick_secs)
            except BufferClosed:
                break
            if batch:
                self.metrics.events_in += len(batch)
                batch = self._apply_filters(batch, 0)
                if batch:
                    await self._fan_out(batch)
                # Every sink has taken (or counted) what came from these events.
                ingest.mark_safe(ingest.taken)
            now = self.clock.monotonic()
            if now >= next_tick:
                next_tick = now + tick_secs
                await self._tick(now)
        await self._flush_filters()

    async def _run_filters_from_queue(self, queue: DiskQueue) -> None:
        """As ``_run_filters``, reading the disk queue; each batch read is acknowledged
        once every sink has written what came of it. Ends once the writer has put the
        closed ingest buffer on disk and everything on disk has been read."""
        tick_secs = self._tick_secs
        next_tick = self.clock.monotonic() + tick_secs
        while True:
            if self._between_batches is not None:
                await self._change_between_batches()
            sinks = self.sinks
            finished = queue.writer_done
            got = await queue.read(tick_secs)
            if got is None and finished:
                break
            if got is not None:
                read, batch = got
                self.metrics.events_in += len(batch)
                batch = self._apply_filters(batch, 0)
                if batch:
                    await self._fan_out(batch)
                queue.track(read, sinks)
            queue.settle()
            now = self.clock.monotonic()
            if now >= next_tick:
                next_tick = now + tick_secs
                await self._tick(now)
        await self._flush_filters()

    def between_batches(self, change: Callable[[], Awaitable[None]]) -> asyncio.Future[None]:
        """Have the filter task run ``change`` before its next batch (a reload swapping
        filters and sinks: no batch is half filtered or half offered). The future
        completes when ``change`` has run, with its error if it raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                await change()
            except Exception as error:
                done.set_exception(error)
            else:
                done.set_result(None)

        self._between_batches = run
        return done

    async def _change_between_batches(self) -> None:
        change, self._between_batches = self._between_batches, None
        if change is not None:
            await change()

    async def _flush_filters(self) -> None:
        for index, unit in enumerate(self.filters):
            held = self._call_filter(unit, unit.flush, None)
            if held:
                held = self._apply_filters(held, index + 1)
                if held:
                    await self._fan_out(held)

    def _apply_filters(self, batch: Batch, first: int) -> Batch:
        for unit in self.filters[first:]:
            if unit.when is None:
                unit.metrics.events_in += len(batch)
                batch = self._call_filter(unit, unit.process, batch)
                unit.metrics.events_out += len(batch)
            else:
                batch = self._apply_selected(unit, unit.when, batch)
            if not batch:
                break
        return batch

    def _apply_selected(self, unit: Filter, when: Callable[[Event], bool], batch: Batch) -> Batch:
        """A filter with ``when``: each run of consecutive matching events goes through
        it as one batch, the events between runs pass it by, and the output keeps
        the stream's order (a run's output takes the run's place). Events a filter
        holds back (multiline) come out with a later run, as without ``when``."""
        metrics = unit.metrics
        out: Batch = []
        run: Batch = []
        skipped = 0
        for event in batch:
            if when(event):
                run.append(event)
                continue
            if run:
                out.extend(self._call_selected(unit, run))
                run = []
            out.append(event)
            skipped += 1
        if not skipped:  # every event matched: the batch is one run
            return self._call_selected(unit, batch)
        if run:
            out.extend(self._call_selected(unit, run))
        metrics.events_unselected += skipped
        return out

    def _call_selected(self, unit: Filter, run: Batch) -> Batch:
        unit.metrics.events_in += len(run)
        result = self._call_filter(unit, unit.process, run)
        unit.metrics.events_out += len(result)
        return result

    def _call_filter(
        self, unit: Filter, method: Callable[..., Batch], batch: Batch | None
    ) -> Batch:
        try:
            return method() if batch is None else method(batch)
        except Exception as error:
            unit.metrics.errors += 1
            if not unit.fails_closed:
                log.exception("filter %s failed; batch passed on unfiltered", unit.name)
                return batch or []
            if not batch:  # tick or flush: nothing was handed to the filter
                log.exception("filter %s failed in tick/flush; it fails closed", unit.name)
                return []
            unit.metrics.drop(len(batch), "filter_error")
            if self.dead_letters is None:
                log.exception(
                    "filter %s failed and fails closed: %d events dropped (no dead-letter "
                    "directory), never passed on", unit.name, len(batch),
                )  # fmt: skip
                return []
            log.exception(
                "filter %s failed and fails closed: %d events go to %s, not to the sinks",
                unit.name, len(batch), self.dead_letters.path(unit.name),
            )  # fmt: skip
            self.dead_letters.add(unit.name, batch, error)
            return []

    async def _tick(self, now: float) -> None:
        for index, unit in enumerate(self.filters):
            due = self._call_filter(unit, lambda u=unit: u.tick(now), None)
            if due:
                due = self._apply_filters(due, index + 1)
                if due:
                    await self._fan_out(due)

    async def _fan_out(self, batch: Batch) -> None:
        self.metrics.events_out += len(batch)
        sinks = self.sinks
        for position, runner in enumerate(sinks):
            try:
                await runner.offer(batch)
            except asyncio.CancelledError:  # stop's deadline: the later sinks lose it too
                for later in sinks[position + 1 :]:
                    later.strand(batch)
                raise

    async def stop(self, timeout_secs: float = 10.0) -> ShutdownReport:
        """Stop inputs, drain the filters and sinks, close the sinks.

        Whatever is not written within ``timeout_secs`` is counted as dropped
        (reason ``shutdown``) and reported per sink.
        """
        self.running = False
        report = ShutdownReport()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        if self.reloading is not None and not self.reloading.done():  # let it finish first
            await asyncio.wait([self.reloading], timeout=timeout_secs / 2)
        inputs, self._started_inputs = self._started_inputs, []
        results = await asyncio.gather(*(unit.stop() for unit in inputs), return_exceptions=True)
        for unit, result in zip(inputs, results, strict=True):
            if isinstance(result, Exception):
                log.error("input %s: stop failed: %s", unit.name, result)
        self.ingest.close()
        sinks, self._started_sinks = self._started_sinks, []
        try:
            async with asyncio.timeout_at(deadline):
                if self.queue is not None:
                    await self.queue.stop_writer()
                if self._filter_task is not None:
                    await asyncio.shield(self._filter_task)
                await asyncio.gather(*(runner.drain() for runner in sinks))
        except TimeoutError:
            report.timed_out = True
        if self._filter_task is not None and not self._filter_task.done():
            self._filter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filter_task
        left_in_ingest = self.ingest.clear()
        if left_in_ingest:
            self.metrics.drop(left_in_ingest, "shutdown")
            report.unflushed["ingest"] = left_in_ingest
        for runner in sinks:
            lost = await runner.abort()
            if lost:
                report.unflushed[runner.name] = lost
        if self.queue is not None:
            self.queue.settle()  # what the sinks wrote while draining
            left = await self.queue.close()
            if left:
                report.on_disk["queue"] = left
        spools = [(runner.name, getattr(runner.sink, "spool", None)) for runner in sinks]
        await asyncio.gather(*(runner.close() for runner in sinks))
        for name, spool in spools:
            left = getattr(spool, "pending_entries", 0)
            if isinstance(left, int) and left > 0:
                report.on_disk[name] = left
        if self.dead_letters is not None:
            self.dead_letters.close()
        return report
