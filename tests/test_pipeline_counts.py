"""Pipeline promises mutation testing (issue 13) found unguarded: per-sink counts add
up over many batches on every offer path, stranded events add up, an input without a
``config`` still fails start with an InputStartError, and a reload that never ends
holds stop back at most half its timeout."""

from __future__ import annotations

import asyncio
import errno
import time
from pathlib import Path

import pytest

from logstream.buffer import BatchBuffer
from logstream.metrics import Registry
from logstream.pipeline import InputStartError, Pipeline, SinkRunner, SinkSettings
from tests.support.inputs import eventually
from tests.support.units import CollectingSink, ListInput
from tests.test_queue import disk_queue


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


def test_with_a_disk_queue_ingest_counts_add_up_over_reads_and_reloads_run(
    tmp_path: Path,
) -> None:
    """Three batches read from the disk queue one at a time: events_in is their sum;
    a change asked for between batches runs in disk-queue mode too."""
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> None:
        pipeline = Pipeline(
            [], [], [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0.01))],
            registry=registry, queue=disk_queue(tmp_path / "queue", registry),
        )  # fmt: skip
        await pipeline.start()
        sent = 0
        for count in (3, 4, 5):
            await pipeline.ingest.put(events(sent, count))
            sent += count
            await eventually(lambda total=sent: len(sink.events) == total)
        ran: list[str] = []

        async def change() -> None:
            ran.append("change")

        await asyncio.wait_for(pipeline.between_batches(change), 5)
        assert ran == ["change"]
        report = await pipeline.stop(timeout_secs=5)
        assert report.clean

    asyncio.run(scenario())
    assert sink.events == events(0, 12)
    assert registry["ingest"].events_in == 12 and registry["ingest"].events_out == 12
