"""Small in-process units for testing the runtime: they stand in for real
inputs and sinks where the runtime's own behaviour is under test."""

from __future__ import annotations

import asyncio

from logstream.buffer import BatchBuffer
from logstream.event import Batch
from logstream.metrics import Registry
from logstream.units import Filter, Input, Sink


class ListInput(Input):
    """Delivers its batches with ``await ingest.put`` (a well-behaved producer)."""

    def __init__(self, name: str, registry: Registry, batches: list[Batch]) -> None:
        super().__init__(name, registry.unit(name, "input"))
        self.batches = batches
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    async def start(self, ingest: BatchBuffer) -> None:
        async def feed() -> None:
            for batch in self.batches:
                self.metrics.events_in += len(batch)
                await ingest.put(list(batch))
            self.done.set()

        self.task = asyncio.create_task(feed())

    async def stop(self) -> None:
        if self.task is not None:
            await self.task


class CollectingSink(Sink):
    """Records every batch written; ``gate`` (when set) must be open for writes to finish."""

    def __init__(self, name: str, registry: Registry, *, gate: asyncio.Event | None = None) -> None:
        super().__init__(name, registry.unit(name, "sink"))
        self.batches: list[Batch] = []
        self.gate = gate
        self.closed = False

    @property
    def events(self) -> Batch:
        return [event for batch in self.batches for event in batch]

    async def write(self, batch: Batch) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(list(batch))
        self.metrics.events_out += len(batch)

    async def close(self) -> None:
        self.closed = True


class FailingSink(Sink):
    """Raises on every write."""

    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, registry.unit(name, "sink"))

    async def write(self, batch: Batch) -> None:
        raise RuntimeError("destination exploded")


class HoldingFilter(Filter):
    """Holds every event back until flush(); emits one marker event per tick()."""

    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, registry.unit(name, "filter"))
        self.held: Batch = []
        self.ticks = 0

    def process(self, batch: Batch) -> Batch:
        self.held.extend(batch)
        return []

    def tick(self, now: float) -> Batch:
        self.ticks += 1
        return []

    def flush(self) -> Batch:
        held, self.held = self.held, []
        return held


class ExplodingFilter(Filter):
    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, registry.unit(name, "filter"))

    def process(self, batch: Batch) -> Batch:
        raise ValueError("bug in a filter")
