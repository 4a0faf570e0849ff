"""Helpers for tests that drive the network inputs directly, with a real
:class:`~logstream.buffer.BatchBuffer` as ingest and real sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol, TypeVar

import orjson
import uvloop

from logstream.buffer import BatchBuffer
from logstream.event import Batch

T = TypeVar("T")

# The loops the inputs run on: uvloop in production, asyncio's own where uvloop is absent.
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


class Runner:
    """Runs a test's coroutine to completion on one kind of event loop.

    Fails the test if anything reached the loop's exception handler (an
    exception escaping a protocol callback, for instance).
    """

    def __init__(self, loop: str) -> None:
        self.loop = loop

    def __call__(self, coro: Coroutine[Any, Any, T], timeout_secs: float = 30.0) -> T:
        errors: list[dict[str, Any]] = []

        async def bounded() -> T:
            asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
            async with asyncio.timeout(timeout_secs):
                return await coro

        with asyncio.Runner(loop_factory=LOOPS[self.loop]) as runner:
            result = runner.run(bounded())
        assert not errors, f"errors reported to the event loop: {errors}"
        return result


class SafeOnPush(BatchBuffer):
    """An ingest buffer whose events are safe as soon as they are pushed: what a
    pipeline whose sinks take everything at once would say (acknowledging inputs
    then answer without waiting for the test to take the events)."""

    def push(self, batch: Batch) -> None:
        super().push(batch)
        self.mark_safe(self.accepted)


class StartStop(Protocol):
    async def start(self, ingest: BatchBuffer) -> None: ...

    async def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def running(unit: StartStop, ingest: BatchBuffer) -> AsyncIterator[BatchBuffer]:
    """Start ``unit`` on ``ingest``; stop it on the way out (then close ingest, as the
    pipeline does)."""
    await unit.start(ingest)
    try:
        yield ingest
    finally:
        await unit.stop()
        ingest.close()


async def take(ingest: BatchBuffer, count: int, timeout_secs: float = 10.0) -> Batch:
    """Exactly ``count`` events from ``ingest``; fails, showing what came, if they do not."""
    events: Batch = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_secs
    while len(events) < count:
        batch = await ingest.get(count - len(events), max(deadline - loop.time(), 0.0))
        if batch is None:
            raise AssertionError(f"expected {count} events, got {len(events)}: {events[-3:]}")
        events.extend(batch)
    return events


async def take_until_quiet(ingest: BatchBuffer, quiet_secs: float = 0.2) -> Batch:
    """Every event that arrives until ``quiet_secs`` pass without one."""
    events: Batch = []
    while (batch := await ingest.get(100_000, quiet_secs)) is not None:
        events.extend(batch)
    return events


def lines(*events: dict[str, Any]) -> bytes:
    """Newline-delimited JSON of ``events``."""
    return b"".join(orjson.dumps(event) + b"\n" for event in events)


def numbered(count: int, start: int = 0, **fields: Any) -> list[dict[str, Any]]:
    """Small v1 events with a ``seq`` field counting from ``start``."""
    return [
        {
            "@timestamp": "2026-11-24T10:00:00.000Z",
            "@version": "1",
            "seq": n,
            "message": f"event {n}",
            "host": "web-1",
            **fields,
        }
        for n in range(start, start + count)
    ]


async def send_tcp(address: tuple[str, int], data: bytes) -> None:
    """Connect, send ``data``, close (with a clean FIN)."""
    _, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def eventually(condition: Callable[[], bool], timeout_secs: float = 5.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms); fail after ``timeout_secs``."""
    for _ in range(int(timeout_secs / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_secs} s")
