"""BatchBuffer and Batcher at their edges: exact boundaries (full, half level, deadline,
merge fit), what close and clear wake, the safe positions, the blocked time.

Each test pins a behaviour the runtime relies on; written against the survivors of
``scripts/mutate buffer``."""

from __future__ import annotations

import asyncio

import pytest

from logstream.buffer import BatchBuffer, Batcher, BufferClosed
from logstream.clock import ManualClock


def events(start: int, count: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(start, start + count)]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- BatchBuffer


def test_buffer_size_must_be_at_least_one_and_one_works() -> None:
    with pytest.raises(ValueError, match=r"max_events must be at least 1, value: 0"):
        BatchBuffer(0)
    buffer = BatchBuffer(1)
    assert buffer.offer(events(0, 1))
    assert buffer.full and not buffer.offer(events(1, 1))


def test_full_is_exactly_at_max_events_and_offer_may_overfill_below_it() -> None:
    buffer = BatchBuffer(4)
    assert not buffer.full and not buffer.closed
    buffer.push(events(0, 3))
    assert not buffer.full and len(buffer) == 3
    assert buffer.offer(events(3, 2))  # not full yet: taken whole, over the bound
    assert len(buffer) == 5 and buffer.full
    assert buffer.accepted == 5


def test_an_empty_batch_changes_nothing_and_wakes_nobody() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(4)
        getter = asyncio.create_task(buffer.get(4))
        await settle()
        buffer.push([])
        await settle()
        assert not getter.done()
        assert (len(buffer), buffer.accepted) == (0, 0)
        buffer.push(events(0, 1))
        assert await asyncio.wait_for(getter, 1) == events(0, 1)

    asyncio.run(scenario())


def test_closed_buffer_refuses_push_and_offer_even_with_room() -> None:
    buffer = BatchBuffer(4)
    buffer.close()
    assert buffer.closed
    assert not buffer.offer(events(0, 1))
    with pytest.raises(BufferClosed, match=r"^buffer is closed$"):
        buffer.push(events(0, 1))
    assert buffer.accepted == 0


def test_put_with_room_does_not_wait_or_count_blocked_time() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(4)  # the system clock: any time spent would show
        for n in range(3):
            await buffer.put(events(n, 1))
        assert buffer.blocked_secs == 0.0 and len(buffer) == 3

    asyncio.run(scenario())


def test_blocked_time_adds_up_over_several_waits() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        buffer = BatchBuffer(2, clock=clock)
        buffer.push(events(0, 2))
        for wait in (2.5, 1.0):
            put = asyncio.create_task(buffer.put(events(9, 1)))
            await settle()
            clock.advance(wait)
            buffer.get_nowait(2)
            await asyncio.wait_for(put, 1)
            buffer.push(events(9, 1))  # full again
        assert buffer.blocked_secs == 3.5

    asyncio.run(scenario())


def test_put_waits_until_the_level_falls_to_half_and_counts_the_time_blocked() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        buffer = BatchBuffer(10, clock=clock)
        buffer.push(events(0, 10))
        put = asyncio.create_task(buffer.put(events(10, 1)))
        await settle()
        clock.advance(2.5)
        assert await buffer.get(4) == events(0, 4)  # 6 left: above half
        await settle()
        assert not put.done()
        await buffer.get(1)  # 5 left: half
        await asyncio.wait_for(put, 1)
        assert buffer.blocked_secs == 2.5
        assert len(buffer) == 6

    asyncio.run(scenario())


def test_every_waiting_put_is_woken_and_refills_in_turn() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(2)
        buffer.push(events(0, 2))
        puts = [asyncio.create_task(buffer.put(events(n, 1))) for n in (2, 3, 4)]
        await settle()
        assert await buffer.get(2) == events(0, 2)
        await settle()
        # All three woke; two fit (the third sees the buffer full again and waits).
        assert sum(p.done() for p in puts) == 2
        assert await buffer.get(2) == events(2, 2)
        await asyncio.wait_for(asyncio.gather(*puts), 1)
        assert await buffer.get(2) == events(4, 1)

    asyncio.run(scenario())


def test_a_put_waiting_when_the_buffer_closes_raises_buffer_closed() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(2)
        buffer.push(events(0, 2))
        put = asyncio.create_task(buffer.put(events(2, 1)))
        await settle()
        buffer.close()
        with pytest.raises(BufferClosed, match=r"^buffer is closed$"):
            await asyncio.wait_for(put, 1)
        assert await buffer.get(5) == events(0, 2)  # what was in it is still drained

    asyncio.run(scenario())


def test_a_cancelled_put_leaves_no_waiter_behind() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(2)
        buffer.push(events(0, 2))
        put = asyncio.create_task(buffer.put(events(2, 1)))
        await settle()
        put.cancel()
        await settle()
        assert len(buffer._putters) == 0
        await buffer.get(2)
        assert len(buffer) == 0

    asyncio.run(scenario())


def test_drained_callbacks_run_at_once_at_or_below_half_or_when_closed() -> None:
    buffer = BatchBuffer(10)
    calls: list[str] = []
    buffer.push(events(0, 5))
    buffer.call_when_drained(lambda: calls.append("at half"))
    assert calls == ["at half"]
    buffer.push(events(5, 1))
    buffer.call_when_drained(lambda: calls.append("above half"))
    assert calls == ["at half"]
    buffer.close()
    assert calls == ["at half", "above half"]
    buffer.call_when_drained(lambda: calls.append("closed"))
    assert calls[-1] == "closed"


def test_half_level_of_an_odd_size_rounds_down() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(3)
        buffer.push(events(0, 3))
        calls: list[int] = []
        buffer.call_when_drained(lambda: calls.append(len(buffer)))
        await buffer.get(1)
        assert calls == []  # 2 left: above 3 // 2
        await buffer.get(1)
        assert calls == [1]

    asyncio.run(scenario())


def test_batches_that_exactly_fit_are_merged_and_one_more_is_not() -> None:
    buffer = BatchBuffer(100)
    buffer.push(events(0, 2))
    buffer.push(events(2, 3))
    buffer.push(events(5, 1))
    assert buffer.get_nowait(5) == events(0, 5)  # 2 + 3 fit exactly; the third waits
    assert buffer.get_nowait(5) == events(5, 1)
    assert buffer.get_nowait(5) is None
    buffer.push(events(6, 2))
    buffer.push(events(8, 2))
    assert buffer.get_nowait(3) == events(6, 2)  # 2 + 2 do not fit in 3
    assert buffer.taken == 8 and len(buffer) == 2


def test_a_batch_of_exactly_max_events_is_taken_whole() -> None:
    buffer = BatchBuffer(100)
    batch = events(0, 4)
    buffer.push(batch)
    assert buffer.get_nowait(4) is batch


def test_taken_events_are_safe_at_once_by_default() -> None:
    buffer = BatchBuffer(100)
    calls: list[str] = []
    buffer.push(events(0, 3))
    buffer.call_when_safe(buffer.accepted, lambda: calls.append("safe"))
    assert calls == [] and buffer.safe == 0
    buffer.get_nowait(2)
    assert calls == [] and buffer.safe == 2
    buffer.get_nowait(2)
    assert calls == ["safe"] and buffer.safe == 3


def test_safe_callbacks_at_one_position_run_in_the_order_they_were_asked() -> None:
    buffer = BatchBuffer(100, safe_when_taken=False)
    buffer.push(events(0, 4))
    calls: list[str] = []
    for name in ("a", "b", "c"):
        buffer.call_when_safe(4, lambda name=name: calls.append(name))  # type: ignore[misc]
    buffer.call_when_safe(2, lambda: calls.append("early"))
    buffer.mark_safe(3)
    assert calls == ["early"]
    buffer.mark_safe(4)  # exactly the position: due
    assert calls == ["early", "a", "b", "c"]
    buffer.mark_safe(4)
    assert calls == ["early", "a", "b", "c"]  # each once


def test_wait_safe_returns_at_once_when_safe_and_otherwise_waits_for_mark_safe() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(100, safe_when_taken=False)
        buffer.push(events(0, 3))
        await asyncio.wait_for(buffer.wait_safe(0), 1)
        waiter = asyncio.create_task(buffer.wait_safe(3))
        await settle()
        buffer.mark_safe(2)
        await settle()
        assert not waiter.done()
        buffer.mark_safe(3)
        await asyncio.wait_for(waiter, 1)
        await asyncio.wait_for(buffer.wait_safe(3), 1)  # exactly safe: no wait

    asyncio.run(scenario())


def test_close_wakes_a_waiting_get_which_then_raises() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(10)
        getter = asyncio.create_task(buffer.get(10))
        await settle()
        buffer.close()
        with pytest.raises(BufferClosed, match=r"^buffer is closed$"):
            await asyncio.wait_for(getter, 1)

    asyncio.run(scenario())


def test_a_get_with_a_timeout_takes_what_arrives_before_it() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(10)
        getter = asyncio.create_task(buffer.get(10, 5.0))
        await settle()
        buffer.push(events(0, 2))
        assert await asyncio.wait_for(getter, 1) == events(0, 2)

    asyncio.run(scenario())


def test_clear_discards_counts_and_wakes_producers_but_not_safe_callbacks() -> None:
    async def scenario() -> None:
        buffer = BatchBuffer(4, safe_when_taken=False)
        buffer.push(events(0, 4))
        safe_calls: list[int] = []
        drained: list[int] = []
        buffer.call_when_safe(4, lambda: safe_calls.append(4))
        buffer.call_when_drained(lambda: drained.append(len(buffer)))
        put = asyncio.create_task(buffer.put(events(4, 1)))
        await settle()
        assert buffer.clear() == 4
        assert len(buffer) == 0 and drained == [0]
        await asyncio.wait_for(put, 1)
        assert buffer.get_nowait(10) == events(4, 1)
        assert safe_calls == []
        assert buffer.clear() == 0

    asyncio.run(scenario())


# --------------------------------------------------------------------------- Batcher


def test_batcher_room_and_length_follow_the_pending_events() -> None:
    batcher = Batcher(max_events=5, max_delay_secs=1.0)
    assert (len(batcher), batcher.room) == (0, 5)
    batcher.add(events(0, 2), 0.0)
    assert (len(batcher), batcher.room) == (2, 3)
    assert batcher.take() == events(0, 2)
    assert (len(batcher), batcher.room) == (0, 5)
    assert batcher.take() == []


def test_batcher_passes_a_batch_of_max_events_or_more_through_as_it_is() -> None:
    batcher = Batcher(max_events=3, max_delay_secs=1.0)
    exact, larger = events(0, 3), events(3, 4)
    assert batcher.add(exact, 0.0) is exact
    assert batcher.add(larger, 0.0) is larger
    assert len(batcher) == 0


def test_batcher_returns_everything_pending_when_an_add_goes_past_max() -> None:
    batcher = Batcher(max_events=3, max_delay_secs=1.0)
    assert batcher.add(events(0, 2), 0.0) is None
    assert batcher.add(events(2, 2), 0.1) == events(0, 4)
    assert len(batcher) == 0


def test_batcher_deadline_is_due_exactly_at_max_delay_and_restarts_after_a_take() -> None:
    batcher = Batcher(max_events=100, max_delay_secs=2.0)
    assert batcher.add(events(0, 1), 10.0) is None
    assert batcher.timeout(11.0) == 1.0
    assert batcher.timeout(13.0) == 0.0  # past due: 0, never negative
    assert batcher.add(events(1, 1), 12.0) == events(0, 2)
    assert batcher.timeout(12.0) is None
    assert batcher.add(events(2, 1), 20.0) is None  # a new deadline, from this add
    assert batcher.timeout(20.5) == 1.5
    assert batcher.add(events(3, 1), 21.9) is None


def test_batcher_accepts_a_zero_delay_and_one_event_batches() -> None:
    batcher = Batcher(max_events=1, max_delay_secs=0.0)
    assert batcher.add(events(0, 1), 0.0) == events(0, 1)
    assert (batcher.max_events, batcher.max_delay_secs) == (1, 0.0)
