"""The runtime: buffers, batching, ordering, backpressure, drop counting, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from logstream.buffer import BatchBuffer, Batcher, BufferClosed
from logstream.clock import ManualClock
from logstream.metrics import Registry
from logstream.pipeline import Pipeline, SinkRunner, SinkSettings
from tests.support.units import (
    CollectingSink,
    ExplodingFilter,
    FailingSink,
    HoldingFilter,
    ListInput,
)


def events(start: int, count: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(start, start + count)]


# --------------------------------------------------------------------------- Batcher


def test_batcher_emits_a_batch_when_the_count_is_reached() -> None:
    clock = ManualClock()
    batcher = Batcher(max_events=5, max_delay_secs=1.0)
    assert batcher.add(events(0, 3), clock.monotonic()) is None
    full = batcher.add(events(3, 2), clock.monotonic())
    assert full == events(0, 5)
    assert batcher.timeout(clock.monotonic()) is None


def test_batcher_flushes_by_the_age_of_the_oldest_pending_event() -> None:
    clock = ManualClock()
    batcher = Batcher(max_events=100, max_delay_secs=0.25)
    assert batcher.add(events(0, 1), clock.monotonic()) is None
    clock.advance(0.125)
    assert batcher.timeout(clock.monotonic()) == 0.125
    assert batcher.add(events(1, 1), clock.monotonic()) is None
    clock.advance(0.125)
    assert batcher.timeout(clock.monotonic()) == 0.0
    assert batcher.add(events(2, 1), clock.monotonic()) == events(0, 3)


def test_batcher_never_changes_a_batch_it_was_given() -> None:
    shared = events(0, 2)
    batcher = Batcher(max_events=100, max_delay_secs=1.0)
    batcher.add(shared, 0.0)
    batcher.add(events(2, 2), 0.5)
    assert shared == events(0, 2)
    assert batcher.take() == events(0, 4)


def test_batcher_with_zero_delay_passes_every_batch_straight_through() -> None:
    batcher = Batcher(max_events=100, max_delay_secs=0.0)
    assert batcher.add(events(0, 2), 5.0) == events(0, 2)


def test_batcher_rejects_nonsense_settings_with_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"max_events.*0"):
        Batcher(max_events=0, max_delay_secs=1)
    with pytest.raises(ValueError, match=r"max_delay_secs.*-1"):
        Batcher(max_events=1, max_delay_secs=-1)


# --------------------------------------------------------------------------- BatchBuffer


def test_buffer_merges_small_batches_and_splits_large_ones_in_order() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(100)
        buffer.push(events(0, 3))
        buffer.push(events(3, 3))
        buffer.push(events(6, 10))
        assert await buffer.get(7) == events(0, 6)
        assert await buffer.get(4) == events(6, 4)
        assert await buffer.get(100) == events(10, 6)
        assert len(buffer) == 0

    asyncio.run(scenario())


def test_buffer_offer_refuses_when_full_and_put_waits_for_room() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(4)
        assert buffer.offer(events(0, 4))
        assert not buffer.offer(events(4, 1))
        put = asyncio.create_task(buffer.put(events(4, 1)))
        await asyncio.sleep(0.01)
        assert not put.done()
        assert await buffer.get(4) == events(0, 4)
        await asyncio.wait_for(put, 1)
        assert await buffer.get(4) == events(4, 1)
        assert buffer.blocked_secs > 0

    asyncio.run(scenario())


def test_buffer_calls_drained_callbacks_at_half_level_once() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(10)
        buffer.push(events(0, 10))
        calls: list[str] = []
        buffer.call_when_drained(lambda: calls.append("resume"))
        await buffer.get(4)
        assert calls == []
        await buffer.get(1)
        assert calls == ["resume"]
        await buffer.get(5)
        assert calls == ["resume"]

    asyncio.run(scenario())


def test_buffer_get_times_out_with_none_and_raises_once_closed_and_empty() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(10)
        assert await buffer.get(10, 0.01) is None
        buffer.push(events(0, 2))
        buffer.close()
        assert await buffer.get(10) == events(0, 2)
        with pytest.raises(BufferClosed):
            await buffer.get(10)
        with pytest.raises(BufferClosed):
            await buffer.put(events(0, 1))

    asyncio.run(scenario())


def test_buffer_calls_safe_callbacks_in_position_order_once_marked() -> None:
    buffer = BatchBuffer(100, safe_when_taken=False)
    calls: list[int] = []
    buffer.push(events(0, 3))
    buffer.call_when_safe(buffer.accepted, lambda: calls.append(3))
    buffer.push(events(3, 2))
    buffer.call_when_safe(buffer.accepted, lambda: calls.append(5))
    buffer.get_nowait(100)
    assert calls == []  # taken is not safe for this buffer
    buffer.mark_safe(4)
    assert calls == [3]
    buffer.mark_safe(5)
    buffer.mark_safe(2)  # going back is ignored
    assert calls == [3, 5]
    buffer.call_when_safe(5, lambda: calls.append(0))  # already safe: at once
    assert calls == [3, 5, 0]


def test_pipeline_marks_events_safe_only_once_every_sink_has_them() -> None:
    """A blocking sink whose buffer is full holds the filter task; ingest's safe
    position stays behind until the sink takes the events."""

    async def scenario() -> None:
        registry = Registry()
        gate = asyncio.Event()
        sink = CollectingSink("slow", registry, gate=gate)
        source = ListInput("list", registry, [events(i * 10, 10) for i in range(10)])
        settings = SinkSettings(buffer_max_events=10, when_full="block", batch_max_events=10)
        pipeline = Pipeline(
            [source],
            [],
            [SinkRunner(sink, settings)],
            registry=registry,
            ingest_max_events=20,
            filter_batch_max_events=10,
        )
        await pipeline.start()
        await asyncio.sleep(0.05)
        assert pipeline.ingest.safe < pipeline.ingest.accepted
        assert pipeline.ingest.safe <= len(sink.events) + 10 + 10  # write + buffer + batcher
        gate.set()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)
        assert pipeline.ingest.safe == pipeline.ingest.accepted == 100

    asyncio.run(scenario())


# --------------------------------------------------------------------------- Pipeline


def run_pipeline(
    batches: list[list[dict[str, int]]],
    sinks: list[tuple[CollectingSink | FailingSink, SinkSettings]],
    registry: Registry,
    filters: list | None = None,
) -> tuple[Pipeline, object]:
    async def scenario() -> tuple[Pipeline, object]:
        source = ListInput("list", registry, batches)
        pipeline = Pipeline(
            [source],
            filters or [],
            [SinkRunner(sink, settings) for sink, settings in sinks],
            registry=registry,
            ingest_max_events=64,
            tick_secs=0.01,
        )
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        report = await pipeline.stop(timeout_secs=5)
        return pipeline, report

    return asyncio.run(scenario())


def test_every_sink_receives_every_event_in_order() -> None:
    registry = Registry()
    first = CollectingSink("first", registry)
    second = CollectingSink("second", registry)
    batches = [events(i * 10, 10) for i in range(50)]
    settings = SinkSettings(buffer_max_events=32, batch_max_events=25, batch_max_delay_secs=0.01)
    _, report = run_pipeline(batches, [(first, settings), (second, settings)], registry)
    assert first.events == events(0, 500)
    assert second.events == events(0, 500)
    assert all(len(batch) <= 25 for batch in first.batches)
    assert first.closed and second.closed
    assert report.clean  # type: ignore[attr-defined]
    assert registry["first"].events_out == 500


def test_a_blocking_sink_slows_the_input_without_losing_events() -> None:
    async def scenario() -> None:
        registry = Registry()
        gate = asyncio.Event()
        sink = CollectingSink("slow", registry, gate=gate)
        source = ListInput("list", registry, [events(i * 10, 10) for i in range(100)])
        pipeline = Pipeline(
            [source],
            [],
            [
                SinkRunner(
                    sink, SinkSettings(buffer_max_events=20, when_full="block", batch_max_events=10)
                )
            ],
            registry=registry,
            ingest_max_events=20,
        )
        await pipeline.start()
        await asyncio.sleep(0.05)
        # The input is stuck: only the two buffers' worth (plus one batch each) got in.
        assert not source.done.is_set()
        assert registry["list"].events_in < 100
        gate.set()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)
        assert sink.events == events(0, 1000)
        assert registry["slow"].dropped_total == 0

    asyncio.run(scenario())


def test_a_stuck_drop_newest_sink_counts_drops_and_never_stalls_the_others() -> None:
    async def scenario() -> None:
        registry = Registry()
        stuck = CollectingSink("stuck", registry, gate=asyncio.Event())
        healthy = CollectingSink("healthy", registry)
        source = ListInput("list", registry, [events(i * 10, 10) for i in range(100)])
        pipeline = Pipeline(
            [source],
            [],
            [
                SinkRunner(
                    stuck,
                    SinkSettings(
                        buffer_max_events=50, when_full="drop_newest", batch_max_events=10
                    ),
                ),
                SinkRunner(healthy, SinkSettings(buffer_max_events=50)),
            ],
            registry=registry,
            ingest_max_events=50,
        )
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        report = await pipeline.stop(timeout_secs=0.5)
        assert healthy.events == events(0, 1000)
        metrics = registry["stuck"]
        assert metrics.dropped["buffer_full"] > 0
        # Nothing vanishes: delivered + dropped (full buffer, or unflushed at shutdown) = offered.
        assert metrics.events_out + metrics.dropped_total == 1000
        assert report.unflushed["stuck"] == metrics.dropped["shutdown"]
        assert report.timed_out

    asyncio.run(scenario())


def test_a_sink_whose_write_raises_has_its_batches_counted_as_dropped() -> None:
    registry = Registry()
    healthy = CollectingSink("healthy", registry)
    failing = FailingSink("failing", registry)
    settings = SinkSettings(batch_max_delay_secs=0)
    run_pipeline([events(0, 30)], [(failing, settings), (healthy, settings)], registry)
    assert registry["failing"].dropped["sink_error"] == 30
    assert healthy.events == events(0, 30)


def test_shutdown_flushes_events_a_filter_held_back() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)
    holder = HoldingFilter("holder", registry)
    run_pipeline([events(0, 40)], [(sink, SinkSettings())], registry, filters=[holder])
    assert sink.events == events(0, 40)
    assert holder.ticks >= 0


def test_a_filter_that_raises_passes_the_batch_on_and_counts_the_error() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)
    run_pipeline(
        [events(0, 5)],
        [(sink, SinkSettings())],
        registry,
        filters=[ExplodingFilter("boom", registry)],
    )
    assert sink.events == events(0, 5)
    assert registry["boom"].errors == 1


def test_metrics_are_exported_as_prometheus_text() -> None:
    registry = Registry()
    sink = CollectingSink("out", registry)
    run_pipeline([events(0, 7)], [(sink, SinkSettings())], registry)
    text = registry.exposition().decode()
    assert 'logstream_events_out_total{kind="sink",unit="out"} 7.0' in text
    assert 'logstream_events_in_total{kind="input",unit="list"} 7.0' in text
