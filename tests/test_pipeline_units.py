"""The pipeline's promises that mutation testing (issue 13) found unguarded: an input
that cannot bind fails ``start`` naming itself and its address, every event is
accounted for (in, out, dropped, left at shutdown) per unit and across batches,
filters tick on the pipeline's clock, and the logs name a failing filter and where
its events went."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from pathlib import Path

import pytest

from logstream.clock import ManualClock
from logstream.event import Batch
from logstream.metrics import Registry
from logstream.pipeline import InputStartError, Pipeline, SinkRunner, SinkSettings
from logstream.queue import DiskQueue
from logstream.units import Filter
from tests.support.inputs import Runner, eventually
from tests.support.units import (
    CollectingSink,
    ExplodingFilter,
    FailingSink,
    HoldingFilter,
    ListInput,
)
from tests.test_input_tcp import tcp_input
from tests.test_queue import disk_queue


def events(start: int, count: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(start, start + count)]


class Tag(Filter):
    """Adds ``tag: <name>`` to every event it sees."""

    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, registry.unit(name, "filter"))

    def process(self, batch: Batch) -> Batch:
        for event in batch:
            event.setdefault("tags", []).append(self.name)
        return batch


class Ticker(Filter):
    """Emits one ``{"tick": now}`` event per tick."""

    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, registry.unit(name, "filter"))
        self.ticks: list[float] = []

    def tick(self, now: float) -> Batch:
        self.ticks.append(now)
        return [{"tick": now}]


class Spooled(CollectingSink):
    """Keeps its own buffer on disk (as the spooled Elasticsearch sink): written at once."""

    spooled = True


class BrokenStop(ListInput):
    async def stop(self) -> None:
        await super().stop()
        raise RuntimeError("socket already gone")


class RaisesClosed(Filter):
    fails_closed = True

    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, registry.unit(name, "filter"))

    def process(self, batch: Batch) -> Batch:
        raise ValueError("bug")


def queue_for(queued: bool, tmp_path: Path, registry: Registry) -> DiskQueue | None:
    """The persisted ingest queue (pipeline.queue.type: disk), or None."""
    return disk_queue(tmp_path / "queue", registry) if queued else None


# --------------------------------------------------------------------------- start


def test_an_input_that_cannot_bind_fails_start_naming_itself_and_its_address() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> InputStartError:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            unit = tcp_input(listen=f"127.0.0.1:{port}")
            pipeline = Pipeline([unit], [], [SinkRunner(sink, SinkSettings())], registry=registry)
            with pytest.raises(InputStartError) as raised:
                await pipeline.start()
            assert not pipeline.running
            return raised.value

    error = Runner("asyncio")(asyncio.wait_for(scenario(), 10))
    port = str(error).split("127.0.0.1:")[1].split(":")[0]
    assert str(error) == (
        f"input tcp cannot listen on 127.0.0.1:{port}: already in use (another process "
        f"listens there; is logstream already running?) [errno {errno.EADDRINUSE}]"
    )
    assert error.errno == errno.EADDRINUSE
    assert isinstance(error.__cause__, OSError)
    assert sink.closed  # what had started (the sink) was stopped again


def test_a_pipeline_without_sinks_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^a pipeline needs at least one sink$"):
        Pipeline([], [], [])


def test_running_is_true_only_between_start_and_stop() -> None:
    registry = Registry()

    async def scenario() -> list[bool]:
        runner = SinkRunner(CollectingSink("out", registry), SinkSettings())
        pipeline = Pipeline([], [], [runner], registry=registry)
        seen = [pipeline.running]
        await pipeline.start()
        seen.append(pipeline.running)
        await pipeline.stop(timeout_secs=5)
        return [*seen, pipeline.running]

    assert asyncio.run(scenario()) == [False, True, False]


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize("queued", [False, True], ids=["memory", "disk_queue"])
def test_every_event_is_counted_once_per_unit_across_many_batches(
    queued: bool, tmp_path: Path
) -> None:
    """Counters add up over batches (not the last batch's size), and the positions the
    disk queue acknowledges by (``offered``/``done``) reach the total for each kind of
    sink: blocking, drop_newest, spooled, and one whose ``when`` selects half; the
    same with the disk queue. Filter ``b`` has a ``when`` matching every other event
    (so it sees runs of one event); ``holder`` holds everything until shutdown."""
    registry = Registry()
    spooled = Spooled("spooled", registry)
    blocking = CollectingSink("blocking", registry)
    dropping = CollectingSink("dropping", registry)
    selecting = CollectingSink("selecting", registry)
    runners = [
        SinkRunner(blocking, SinkSettings(batch_max_delay_secs=0.01)),
        SinkRunner(dropping, SinkSettings(when_full="drop_newest", batch_max_delay_secs=0.01)),
        SinkRunner(
            selecting, SinkSettings(batch_max_delay_secs=0.01, when=lambda e: e["n"] % 2 == 0)
        ),
        SinkRunner(spooled, SinkSettings(batch_max_delay_secs=60)),
    ]
    tag_a, tag_b = Tag("a", registry), Tag("b", registry)
    tag_b.when = lambda e: e["n"] % 2 == 1
    holder = HoldingFilter("holder", registry)

    async def scenario() -> None:
        source = ListInput("list", registry, [events(i * 10, 10) for i in range(7)])
        pipeline = Pipeline(
            [source], [tag_a, tag_b, holder], runners, registry=registry,
            filter_batch_max_events=10, queue=queue_for(queued, tmp_path, registry),
        )  # fmt: skip
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await eventually(lambda: registry["holder"].events_in == 70)  # batch by batch
        assert spooled.events == []  # held back
        report = await pipeline.stop(timeout_secs=5)
        assert report.clean

    asyncio.run(scenario())
    assert [e["tags"] for e in blocking.events] == [["a"], ["a", "b"]] * 35  # in order
    assert blocking.events == dropping.events == spooled.events
    assert [e["n"] for e in selecting.events] == list(range(0, 70, 2))
    ingest = registry["ingest"]
    assert (ingest.kind, ingest.events_in, ingest.events_out) == ("pipeline", 70, 70)
    assert (registry["a"].events_in, registry["a"].events_out) == (70, 70)
    assert (registry["b"].events_in, registry["b"].events_out) == (35, 35)
    assert registry["b"].events_unselected == 35
    for runner, offered in zip(runners, (70, 70, 35, 70), strict=True):
        assert runner.metrics.events_in == offered
        assert runner.offered == runner.done == offered
        assert runner.metrics.events_out == offered
    assert registry["selecting"].events_unselected == 35


def test_a_full_drop_newest_buffer_counts_its_drops_as_done() -> None:
    registry = Registry()
    gate = asyncio.Event()
    sink = CollectingSink("stuck", registry, gate=gate)
    runner = SinkRunner(
        sink, SinkSettings(buffer_max_events=10, when_full="drop_newest", batch_max_events=10)
    )

    async def scenario() -> None:
        source = ListInput("list", registry, [events(i * 10, 10) for i in range(5)])
        pipeline = Pipeline([source], [], [runner], registry=registry, filter_batch_max_events=10)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await eventually(lambda: pipeline.metrics.events_out == 50)
        dropped = runner.metrics.dropped["buffer_full"]
        assert dropped >= 20  # at most one batch in write and one in the buffer
        assert (runner.offered, runner.done) == (50, dropped)  # drops need no write
        gate.set()
        await pipeline.stop(timeout_secs=5)
        assert runner.done == runner.offered == 50
        assert len(sink.events) + dropped == 50

    asyncio.run(scenario())


def test_buffer_depth_counts_events_waiting_in_the_buffer_and_the_batcher() -> None:
    registry = Registry()
    gate = asyncio.Event()
    sink = CollectingSink("out", registry, gate=gate)
    # A batch waits in the batcher for more events (a 60 s delay), the rest in the buffer.
    runner = SinkRunner(sink, SinkSettings(batch_max_events=100, batch_max_delay_secs=60))

    async def scenario() -> None:
        await runner.start()
        await runner.offer(events(0, 30))
        await eventually(lambda: len(runner.buffer) == 0)  # the task moved them to the batcher
        assert runner.metrics.buffer_depth is not None
        assert runner.metrics.buffer_depth() == 30
        await runner.offer(events(30, 100))
        await eventually(lambda: len(runner.buffer) == 30)  # 100 went to write, 30 wait
        assert runner.metrics.buffer_depth() == 30
        gate.set()
        await runner.drain()
        assert runner.metrics.buffer_depth() == 0

    asyncio.run(scenario())
    assert sink.events == events(0, 130)
    text = registry.exposition().decode()
    assert 'logstream_buffer_events{kind="sink",unit="out"} 0.0' in text


def test_ingest_buffer_depth_is_exported() -> None:
    registry = Registry()
    runner = SinkRunner(CollectingSink("out", registry), SinkSettings())
    pipeline = Pipeline([], [], [runner], registry=registry)
    pipeline.ingest.push(events(0, 12))
    text = registry.exposition().decode()
    assert 'logstream_buffer_events{kind="pipeline",unit="ingest"} 12.0' in text


def test_events_stuck_at_shutdown_are_reported_per_place() -> None:
    """A blocking sink that never returns: the filter task waits, the ingest buffer
    fills; stop's deadline passes. What is left in ingest and in the sink (its write
    and its buffer, and the batch the filter task was offering it) is reported
    unflushed, per place, and counted dropped for shutdown."""
    registry = Registry()
    sink = CollectingSink("stuck", registry, gate=asyncio.Event())
    runner = SinkRunner(sink, SinkSettings(buffer_max_events=20, batch_max_events=10))

    async def scenario() -> None:
        source = ListInput("list", registry, [events(i * 10, 10) for i in range(10)])
        pipeline = Pipeline(
            [source], [], [runner], registry=registry, ingest_max_events=30,
            filter_batch_max_events=10,
        )  # fmt: skip
        await pipeline.start()
        # 10 in write, 20 in the sink's buffer, 10 in the filter task's offer, the rest
        # in ingest (and the input waits for room).
        await eventually(lambda: registry["stuck"].events_in == 40 and len(pipeline.ingest) > 0)
        await asyncio.sleep(0.05)
        source.task.cancel()  # type: ignore[union-attr]  # the input gives up waiting
        in_ingest = len(pipeline.ingest)
        report = await pipeline.stop(timeout_secs=0.2)
        assert report.timed_out
        assert report.unflushed["ingest"] == in_ingest == registry["ingest"].dropped["shutdown"]
        # Every event the sink counted in: 10 in write, 20 buffered, 10 being offered.
        assert report.unflushed["stuck"] == 40 == registry["stuck"].dropped["shutdown"]
        assert sink.events == []

    asyncio.run(scenario())


def test_a_batch_stop_kept_from_later_sinks_is_counted_there() -> None:
    """The first of two sinks is stuck and full: the filter task waits to offer it a
    batch. stop's deadline passes: that batch is lost for both sinks, and each counts
    it in and dropped for shutdown (the second only what its ``when`` selects)."""
    registry = Registry()
    stuck = CollectingSink("stuck", registry, gate=asyncio.Event())
    later = CollectingSink("later", registry)
    runners = [
        SinkRunner(stuck, SinkSettings(buffer_max_events=20, batch_max_events=10)),
        SinkRunner(
            later,
            SinkSettings(batch_max_delay_secs=0.01, when=lambda event: event["n"] % 2 == 0),
        ),
    ]

    async def scenario() -> None:
        source = ListInput("list", registry, [events(i * 10, 10) for i in range(4)])
        pipeline = Pipeline([source], [], runners, registry=registry, filter_batch_max_events=10)
        await pipeline.start()
        await eventually(lambda: registry["stuck"].events_in == 40)
        await eventually(lambda: len(later.events) == 15)  # 30 offered, the even half
        report = await pipeline.stop(timeout_secs=0.2)
        assert report.timed_out
        assert report.unflushed["stuck"] == 40 == registry["stuck"].dropped["shutdown"]
        assert report.unflushed["later"] == 5 == registry["later"].dropped["shutdown"]
        assert registry["later"].events_in == 20
        assert registry["later"].events_unselected == 20
        assert registry["later"].events_out == 15

    asyncio.run(scenario())


def test_an_input_whose_stop_raises_is_logged_and_the_rest_still_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> None:
        source = BrokenStop("broken", registry, [events(0, 5)])
        runners = [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0.01))]
        pipeline = Pipeline([source], [], runners, registry=registry)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        report = await pipeline.stop(timeout_secs=5)
        assert report.clean

    with caplog.at_level(logging.ERROR, logger="logstream.pipeline"):
        asyncio.run(scenario())
    assert sink.events == events(0, 5) and sink.closed
    assert [r.getMessage() for r in caplog.records] == [
        "input broken: stop failed: socket already gone"
    ]


# --------------------------------------------------------------------------- ticks


@pytest.mark.parametrize("queued", [False, True], ids=["memory", "disk_queue"])
def test_filters_tick_once_per_tick_secs_of_the_pipeline_clock(
    queued: bool, tmp_path: Path
) -> None:
    """What a tick emits goes through the filters after the ticking one, and a tick
    is due exactly when ``tick_secs`` have passed on the pipeline's clock (steps that
    are exact in binary, so that the sums are too)."""
    registry = Registry()
    clock = ManualClock(start=100.0)
    sink = CollectingSink("out", registry)
    ticker = Ticker("ticker", registry)

    async def scenario() -> None:
        runners = [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0))]
        pipeline = Pipeline(
            [], [Tag("before", registry), ticker, Tag("after", registry)], runners,
            registry=registry, tick_secs=0.0625, clock=clock,
            queue=queue_for(queued, tmp_path, registry),
        )  # fmt: skip
        await pipeline.start()
        await asyncio.sleep(0.2)  # idle rounds of the filter task, the clock stands still
        assert ticker.ticks == []
        clock.advance(0.0625)
        await eventually(lambda: len(sink.events) == 1)
        await asyncio.sleep(0.2)
        assert ticker.ticks == [100.0625]
        pipeline.ingest.push(events(0, 1))
        await eventually(lambda: len(sink.events) == 2)
        clock.advance(0.03125)
        await asyncio.sleep(0.2)
        assert ticker.ticks == [100.0625]  # half a tick
        clock.advance(0.03125)
        await eventually(lambda: len(ticker.ticks) == 2)
        await pipeline.stop(timeout_secs=5)

    asyncio.run(scenario())
    assert sink.events[0] == {"tick": 100.0625, "tags": ["after"]}
    assert sink.events[1] == {"n": 0, "tags": ["before", "after"]}


def test_events_a_filter_held_go_through_the_later_filters_at_shutdown() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> None:
        source = ListInput("list", registry, [events(0, 4)])
        runners = [SinkRunner(sink, SinkSettings())]
        filters = [Tag("a", registry), HoldingFilter("holder", registry), Tag("b", registry)]
        pipeline = Pipeline([source], filters, runners, registry=registry)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)

    asyncio.run(scenario())
    assert sink.events == [{"n": n, "tags": ["a", "b"]} for n in range(4)]


# --------------------------------------------------------------------------- failing filters


def test_a_failing_filter_is_logged_by_name_and_counted_per_batch(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Fail open: the log names the filter and says the batch went on unfiltered.
    Fail closed: it names the filter, the events and the dead-letter file."""
    registry = Registry()
    sink = CollectingSink("out", registry)
    closed = RaisesClosed("strict", registry)

    async def scenario() -> None:
        source = ListInput("list", registry, [events(0, 3), events(3, 3)])
        runners = [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0.01))]
        pipeline = Pipeline(
            [source], [ExplodingFilter("loose", registry), closed], runners,
            registry=registry, filter_batch_max_events=3, dead_letter_dir=tmp_path,
        )  # fmt: skip
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await eventually(lambda: registry["strict"].errors == 2)
        await pipeline.stop(timeout_secs=5)

    with caplog.at_level(logging.ERROR, logger="logstream.pipeline"):
        asyncio.run(scenario())
    assert sink.events == []
    assert (registry["loose"].errors, registry["strict"].errors) == (2, 2)
    assert registry["strict"].dropped == {"filter_error": 6}
    path = next(tmp_path.iterdir())
    assert [r.getMessage() for r in caplog.records] == [
        "filter loose failed; batch passed on unfiltered",
        f"filter strict failed and fails closed: 3 events go to {path}, not to the sinks",
    ] * 2


def test_a_fail_closed_filter_without_dead_letters_logs_the_dropped_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> None:
        source = ListInput("list", registry, [events(0, 4)])
        runners = [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0.01))]
        filters = [RaisesClosed("strict", registry)]
        pipeline = Pipeline([source], filters, runners, registry=registry)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)

    with caplog.at_level(logging.ERROR, logger="logstream.pipeline"):
        asyncio.run(scenario())
    assert sink.events == []
    assert [r.getMessage() for r in caplog.records] == [
        "filter strict failed and fails closed: 4 events dropped (no dead-letter directory), "
        "never passed on"
    ]


class FlushFails(HoldingFilter):
    fails_closed = True

    def flush(self) -> Batch:
        raise OSError("flush failed")


def test_a_fail_closed_filter_failing_in_flush_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> None:
        source = ListInput("list", registry, [events(0, 2)])
        runners = [SinkRunner(sink, SinkSettings())]
        pipeline = Pipeline([source], [FlushFails("held", registry)], runners, registry=registry)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)

    with caplog.at_level(logging.ERROR, logger="logstream.pipeline"):
        asyncio.run(scenario())
    assert sink.events == [] and sink.closed
    assert registry["held"].errors == 1
    assert [r.getMessage() for r in caplog.records] == [
        "filter held failed in tick/flush; it fails closed"
    ]


class CloseFails(CollectingSink):
    async def close(self) -> None:
        raise OSError("disk gone")


def test_a_sink_whose_close_raises_is_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    other = CollectingSink("other", registry)

    async def scenario() -> None:
        runners = [SinkRunner(CloseFails("broken", registry), SinkSettings()),
                   SinkRunner(other, SinkSettings())]  # fmt: skip
        pipeline = Pipeline([], [], runners, registry=registry)
        await pipeline.start()
        await pipeline.stop(timeout_secs=5)

    with caplog.at_level(logging.ERROR, logger="logstream.pipeline"):
        asyncio.run(scenario())
    assert other.closed
    assert [r.getMessage() for r in caplog.records] == ["sink broken: close failed"]


def test_a_failed_sink_write_is_logged_with_the_sink_and_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    runner = SinkRunner(FailingSink("failing", registry), SinkSettings(batch_max_delay_secs=0))

    async def scenario() -> None:
        await runner.start()
        await runner.offer(events(0, 3))
        await runner.drain()

    with caplog.at_level(logging.ERROR, logger="logstream.pipeline"):
        asyncio.run(scenario())
    assert runner.metrics.dropped == {"sink_error": 3}
    assert runner.done == runner.offered == 3
    assert [r.getMessage() for r in caplog.records] == [
        "sink failing: write of 3 events failed; dropped"
    ]


class FailingTicker(Ticker):
    def tick(self, now: float) -> Batch:
        raise RuntimeError("tick bug")


def test_a_filter_failing_in_tick_or_on_selected_events_is_counted_and_passed_by() -> None:
    """Fail open: a tick that raises emits nothing; a filter with ``when`` that raises
    passes each run of matching events on unfiltered, in stream order."""
    registry = Registry()
    clock = ManualClock()
    sink = CollectingSink("out", registry)
    picky = ExplodingFilter("picky", registry)
    picky.when = lambda e: e["n"] != 1
    ticker = FailingTicker("ticker", registry)

    async def scenario() -> None:
        runners = [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0))]
        pipeline = Pipeline(
            [], [picky, ticker], runners, registry=registry, tick_secs=0.0625, clock=clock
        )
        await pipeline.start()
        pipeline.ingest.push(events(0, 3))
        await eventually(lambda: len(sink.events) == 3)
        clock.advance(0.0625)
        await eventually(lambda: registry["ticker"].errors == 1)
        await pipeline.stop(timeout_secs=5)

    asyncio.run(scenario())
    assert sink.events == events(0, 3)
    assert registry["picky"].errors == 2  # the runs [0] and [2]
    assert registry["picky"].events_unselected == 1


def test_a_change_between_batches_reports_its_error_to_the_caller() -> None:
    registry = Registry()

    async def scenario() -> None:
        runner = SinkRunner(CollectingSink("out", registry), SinkSettings())
        pipeline = Pipeline([], [], [runner], registry=registry, tick_secs=0.01)
        await pipeline.start()

        async def change() -> None:
            raise ValueError("the new sink cannot start")

        with pytest.raises(ValueError, match="the new sink cannot start"):
            await asyncio.wait_for(pipeline.between_batches(change), 5)
        await pipeline.stop(timeout_secs=5)

    asyncio.run(scenario())


def test_abort_counts_what_waits_in_the_batcher_and_nothing_for_an_idle_runner() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)
    waiting = SinkRunner(sink, SinkSettings(batch_max_events=100, batch_max_delay_secs=60))
    idle = SinkRunner(CollectingSink("idle", registry), SinkSettings(batch_max_delay_secs=0))

    async def scenario() -> tuple[int, int]:
        await waiting.start()
        await idle.start()
        await waiting.offer(events(0, 30))
        await idle.offer(events(0, 5))
        await eventually(lambda: len(waiting.buffer) == 0 and idle.done == 5)
        return await waiting.abort(), await idle.abort()

    assert asyncio.run(scenario()) == (30, 0)
    assert registry["out"].dropped == {"shutdown": 30}
    assert registry["idle"].dropped_total == 0


class StartFails(CollectingSink):
    async def start(self) -> None:
        raise ConnectionRefusedError("destination down")


def test_a_sink_that_cannot_start_fails_start_with_its_error_and_stops_the_others() -> None:
    registry = Registry()
    first = CollectingSink("first", registry)

    async def scenario() -> None:
        runners = [SinkRunner(first, SinkSettings()),
                   SinkRunner(StartFails("broken", registry), SinkSettings())]  # fmt: skip
        pipeline = Pipeline([], [], runners, registry=registry)
        with pytest.raises(ConnectionRefusedError, match="destination down"):
            await pipeline.start()

    asyncio.run(scenario())
    assert first.closed


def test_stop_lets_a_reload_in_progress_finish_first() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)

    async def scenario() -> None:
        pipeline = Pipeline([], [], [SinkRunner(sink, SinkSettings())], registry=registry)
        await pipeline.start()
        order: list[str] = []

        async def reload() -> None:
            await asyncio.sleep(0.1)
            order.append(f"reload done, sink closed: {sink.closed}")

        pipeline.reloading = asyncio.create_task(reload())
        await pipeline.stop(timeout_secs=5)
        assert order == ["reload done, sink closed: False"]

    asyncio.run(scenario())
