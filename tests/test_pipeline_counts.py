"""Pipeline promises mutation testing (issue 13) found unguarded: per-sink counts add
up over many batches on every offer path, stranded events add up, an input without a
``config`` still fails start with an InputStartError, and a reload that never ends
holds stop back at most half its timeout."""

from __future__ import annotations

import asyncio
import errno
import time

import pytest

from logstream.buffer import BatchBuffer
from logstream.metrics import Registry
from logstream.pipeline import InputStartError, Pipeline, SinkRunner, SinkSettings
from tests.support.units import CollectingSink, ListInput


def events(start: int, count: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(start, start + count)]


class Spooled(CollectingSink):
    spooled = True


@pytest.mark.parametrize("path", ["block", "drop_newest", "spooled"])
def test_events_in_and_offered_add_up_over_batches_on_every_offer_path(path: str) -> None:
    registry = Registry()
    sink = (Spooled if path == "spooled" else CollectingSink)("out", registry)
    when_full = "drop_newest" if path == "drop_newest" else "block"
    runner = SinkRunner(sink, SinkSettings(when_full=when_full))  # type: ignore[arg-type]

    async def scenario() -> None:
        await runner.start()
        for start, count in ((0, 3), (3, 3), (6, 4)):
            await runner.offer(events(start, count))
        await runner.drain()

    asyncio.run(scenario())
    assert registry["out"].events_in == 10
    assert runner.offered == 10 and runner.done == 10
    assert sink.events == events(0, 10)


def test_stranded_batches_add_up_and_abort_counts_them_with_or_without_when() -> None:
    registry = Registry()
    plain = SinkRunner(CollectingSink("plain", registry), SinkSettings())
    odd = SinkRunner(
        CollectingSink("odd", registry), SinkSettings(when=lambda event: event["n"] % 2 == 1)
    )

    async def scenario() -> tuple[int, int]:
        for runner in (plain, odd):
            runner.strand(events(0, 4))
            runner.strand(events(4, 3))
        return await plain.abort(), await odd.abort()

    assert asyncio.run(scenario()) == (7, 3)
    assert registry["plain"].events_in == 7 and registry["plain"].dropped == {"shutdown": 7}
    assert registry["odd"].events_in == 3 and registry["odd"].events_unselected == 4


class NoConfigInput(ListInput):
    """An input without a ``config`` attribute whose start cannot bind."""

    async def start(self, ingest: BatchBuffer) -> None:
        raise OSError(errno.EADDRINUSE, "Address already in use")


def test_an_input_without_config_that_cannot_bind_still_raises_input_start_error() -> None:
    registry = Registry()
    unit = NoConfigInput("bare", registry, [])
    assert not hasattr(unit, "config")

    async def scenario() -> InputStartError:
        runner = SinkRunner(CollectingSink("out", registry), SinkSettings())
        pipeline = Pipeline([unit], [], [runner], registry=registry)
        with pytest.raises(InputStartError) as raised:
            await pipeline.start()
        return raised.value

    error = asyncio.run(scenario())
    assert error.errno == errno.EADDRINUSE
    assert "bare" in str(error)


def test_the_filter_task_is_named_filters() -> None:
    registry = Registry()

    async def scenario() -> set[str]:
        runner = SinkRunner(CollectingSink("out", registry), SinkSettings())
        pipeline = Pipeline([], [], [runner], registry=registry)
        await pipeline.start()
        names = {task.get_name() for task in asyncio.all_tasks()}
        await pipeline.stop(timeout_secs=5)
        return names

    assert {"filters", "sink:out"} <= asyncio.run(scenario())


def test_a_reload_that_never_ends_holds_stop_back_half_its_timeout() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> float:
        pipeline = Pipeline([], [], [SinkRunner(sink, SinkSettings())], registry=registry)
        await pipeline.start()
        pipeline.reloading = asyncio.create_task(asyncio.sleep(3600))
        began = time.monotonic()
        await pipeline.stop(timeout_secs=1.0)
        took = time.monotonic() - began
        pipeline.reloading.cancel()
        return took

    took = asyncio.run(scenario())
    assert 0.45 <= took < 0.9
    assert sink.closed
