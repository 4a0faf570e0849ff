"""The disk spool under faults the OS really produces (a failing fsync, descriptors left
behind), and its bookkeeping at the edges: bounds, what open rewrites, what an
out-of-order ack writes, the numbers after a drop."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from logstream.spool import Spool, SpoolClosed, SpoolSettings, encode_record
from tests.support.inputs import Runner


@pytest.fixture
def run() -> Runner:
    return Runner("uvloop")


def record(i: int, size: int = 20) -> list[bytes]:
    """Two entries; 16 + 8 + 2 * size bytes framed (64 with the default size)."""
    return [f"r{i}.{j}:".encode().ljust(size, b"x") for j in range(2)]


async def until(condition: Callable[[], bool], secs: float = 10.0) -> None:
    """Wait for ``condition`` (a loaded machine delays the sync rounds); fail after ``secs``."""
    deadline = time.monotonic() + secs
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def drain(spool: Spool) -> list[bytes]:
    """Read and acknowledge everything there is now."""
    out: list[bytes] = []
    while (batch := await spool.read(100, timeout_secs=0)) is not None:
        out += batch.entries
        spool.ack(batch)
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def segment_sizes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


def overwrite_first_segment(directory: Path, offset: int, data: bytes) -> Path:
    segment = min(directory.glob("*.seg"))
    with open(segment, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return segment


def spool_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "logstream.spool" and r.levelno == level
    ]


def break_fsync_of_the_cursor(spool: Spool) -> None:
    """Put /dev/null behind the spool's cursor descriptor: writes still succeed, and the
    kernel answers fsync with EINVAL, as it does for a file system that cannot sync."""
    null = os.open("/dev/null", os.O_WRONLY)
    try:
        os.dup2(null, spool._syncer.cursor_fd)
    finally:
        os.close(null)


def test_a_failed_fsync_fails_the_appends_it_covers_and_the_spool_goes_on(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fsync always: the round that covers an append fails (EINVAL from the kernel), so
    that append raises the OSError; the next round works and so does the next append."""

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="always"))
        await spool.append(record(0))
        batch = await spool.read(10)
        assert batch is not None
        break_fsync_of_the_cursor(spool)
        spool.ack(batch)  # the cursor is written (to /dev/null) and due for a sync
        with pytest.raises(OSError, match="Invalid argument") as failed:
            await spool.append(record(1))  # its round syncs the cursor too: EINVAL
        assert failed.value.errno == errno.EINVAL
        await spool.append(record(2))  # the cursor is not dirty any more: this one syncs
        rest = await spool.read(10)
        assert rest is not None and rest.entries == record(1) + record(2)
        await spool.close()

    with caplog.at_level(logging.ERROR, logger="logstream.spool"):
        run(scenario())


def test_a_failed_fsync_round_of_the_interval_task_is_logged_and_the_task_goes_on(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="interval", fsync_interval_secs=0.01))
        await spool.append(record(0))
        batch = await spool.read(10)
        assert batch is not None
        await until(lambda: spool.syncs == 1)
        break_fsync_of_the_cursor(spool)
        spool.ack(batch)
        await until(lambda: bool(spool_messages(caplog, logging.ERROR)))
        assert spool.syncs == 1  # the failed round is not counted
        await spool.append(record(1))  # the next round syncs the segment: counted
        await until(lambda: spool.syncs == 2)
        await spool.close()

    with caplog.at_level(logging.ERROR, logger="logstream.spool"):
        run(scenario())
    assert spool_messages(caplog, logging.ERROR) == [f"spool {tmp_path}: fsync failed"]
    # With its traceback (as text: a handler another test installed may have formatted
    # the record and dropped exc_info).
    assert "OSError: [Errno 22] Invalid argument" in caplog.text


def test_the_sync_task_is_named_after_its_directory(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="interval"))
        await spool.append(record(0))
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert f"spool-sync {tmp_path}" in names
        await spool.close()

    run(scenario())


def test_an_idle_spool_with_data_does_no_more_fsync_rounds(run: Runner, tmp_path: Path) -> None:
    """After the round that synced an append (segment, new file, cursor), nothing is
    dirty: later intervals do no round."""

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="interval", fsync_interval_secs=0.01))
        await spool.append(record(0))
        await until(lambda: spool.syncs == 1)
        await asyncio.sleep(0.2)
        assert spool.syncs == 1
        await spool.close()

    run(scenario())


def test_a_rotated_segment_alone_gets_its_round_and_its_descriptor_closed(
    run: Runner, tmp_path: Path
) -> None:
    """An append that fills the segment rotates it and starts no new one: the next round
    has only the retired descriptor to fsync and close. Nothing stays open."""

    async def scenario() -> None:
        before = open_fds()
        spool = Spool.open(
            tmp_path, SpoolSettings(fsync="interval", fsync_interval_secs=0.01, segment_bytes=100)
        )
        await spool.append(record(0))  # 64 bytes: segment 1 is being written
        await until(lambda: spool.syncs == 1)
        assert open_fds() == before + 2  # the cursor and the segment
        await spool.append(record(1))  # 128 bytes: rotated, no new segment yet
        await until(lambda: spool.syncs == 2)
        await until(lambda: open_fds() == before + 1)  # the cursor only
        await spool.close()
        assert open_fds() == before

    run(scenario())


def test_an_out_of_order_ack_writes_no_cursor_until_the_prefix_is_acked(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="never"))
        for i in range(2):
            await spool.append(record(i))
        first = await spool.read(1)
        second = await spool.read(1)
        assert first is not None and second is not None
        cursor = (tmp_path / "cursor").read_bytes()
        spool.ack(second)
        assert (tmp_path / "cursor").read_bytes() == cursor
        spool.ack(first)
        assert (tmp_path / "cursor").read_bytes() != cursor
        await spool.close()

    run(scenario())


def test_reopening_a_spool_with_a_good_cursor_does_not_rewrite_it(
    run: Runner, tmp_path: Path
) -> None:
    async def fill() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="never"))
        await spool.append(record(0))
        batch = await spool.read(10)
        assert batch is not None
        spool.ack(batch)
        await spool.append(record(1))
        await spool.close()

    run(fill())
    cursor = (tmp_path / "cursor").read_bytes()
    for _ in range(2):
        spool = Spool.open(tmp_path, SpoolSettings(fsync="never"))
        assert spool.recovery.cursor == "ok" and spool.recovery.entries == 2
        run(spool.close())
        assert (tmp_path / "cursor").read_bytes() == cursor


def test_segments_are_numbered_one_after_another(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="never", segment_bytes=100))
        for i in range(6):  # two records to a segment
            await spool.append(record(i))
        await spool.close()

    run(scenario())
    names = sorted(p.name for p in tmp_path.glob("*.seg"))
    assert names == [f"{i:020d}.seg" for i in (1, 2, 3)]


def test_a_record_exactly_max_bytes_fits_and_one_byte_more_is_refused(
    run: Runner, tmp_path: Path
) -> None:
    size = len(encode_record(record(0)))

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(max_bytes=size, segment_bytes=size))
        await spool.append(record(0))
        assert spool.disk_bytes == size
        with pytest.raises(ValueError, match=f"^a record of {size + 2} bytes can never fit"):
            await spool.append(record(1, size=21))
        await spool.close()

    run(scenario())


def test_drop_oldest_keeps_the_disk_under_max_bytes_even_when_one_drop_is_not_enough(
    run: Runner, tmp_path: Path
) -> None:
    """A big record needs several old segments dropped: each append stays within
    max_bytes, and the counts balance: appended = read + dropped."""

    async def scenario() -> None:
        spool = Spool.open(
            tmp_path,
            SpoolSettings(max_bytes=700, segment_bytes=128, when_full="drop_oldest"),
        )
        appended = 0
        for i in range(8):  # 64-byte records, two to a segment
            await spool.append(record(i))
            appended += 2
            assert spool.disk_bytes <= 700
        await spool.append(record(99, size=250))  # 524 bytes: needs most of the room
        appended += 2
        assert spool.disk_bytes <= 700
        assert segment_sizes(tmp_path) == spool.disk_bytes
        assert len(await drain(spool)) + spool.dropped_entries == appended
        assert (spool.pending_entries, spool.pending_bytes) == (0, 0)
        await spool.close()

    run(scenario())


def test_pending_bytes_stay_exact_when_a_partly_acked_segment_is_dropped(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(
            tmp_path, SpoolSettings(max_bytes=400, segment_bytes=200, when_full="drop_oldest")
        )
        for i in range(4):  # segment 1: records 0-3 (256 bytes, rotated)
            await spool.append(record(i))
        batches = [await spool.read(1) for _ in range(3)]
        assert all(b is not None for b in batches)
        for b in batches[:2]:
            assert b is not None
            spool.ack(b)  # two of its records acked, one read but not, one unread
        assert spool.pending_bytes == 2 * 64
        for i in range(4, 7):  # segment 2; the third append needs segment 1's room
            await spool.append(record(i))
        assert spool.dropped_entries == 4  # records 2 and 3
        assert spool.pending_bytes == 3 * 64  # records 4-6
        late = batches[2]
        assert late is not None
        spool.ack(late)  # from the dropped segment: accepted, changes nothing
        assert spool.pending_bytes == 3 * 64
        rest = await spool.read(100, timeout_secs=0)
        assert rest is not None and rest.entries == record(4) + record(5) + record(6)
        spool.ack(rest)
        assert (spool.pending_entries, spool.pending_bytes) == (0, 0)
        await spool.close()

    run(scenario())


def test_blocked_secs_is_the_time_appends_waited(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(max_bytes=128, segment_bytes=128))
        await spool.append(record(0))
        await spool.append(record(1))  # full
        began = time.monotonic()
        blocked = asyncio.ensure_future(spool.append(record(2)))
        await asyncio.sleep(0.2)
        await drain(spool)
        await asyncio.wait_for(blocked, 2)
        waited = time.monotonic() - began
        assert 0.15 < spool.blocked_secs <= waited
        await spool.close()

    run(scenario())


def test_an_append_that_close_overtakes_is_told_the_spool_closed(
    run: Runner, tmp_path: Path
) -> None:
    """An append waiting for the append lock when close begins."""

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(max_bytes=128, segment_bytes=128))
        await spool.append(record(0))
        await spool.append(record(1))
        first = asyncio.ensure_future(spool.append(record(2)))  # holds the lock, waits for room
        second = asyncio.ensure_future(spool.append(record(3)))  # waits for the lock
        await asyncio.sleep(0.05)
        await spool.close()
        for blocked in (first, second):
            with pytest.raises(SpoolClosed, match=f"^spool {tmp_path} is closed$"):
                await blocked
        with pytest.raises(SpoolClosed, match=f"^spool {tmp_path} is closed$"):
            await spool.append(record(4))

    run(scenario())


def test_corruption_found_while_reading_is_logged_with_its_file_and_offset(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="never"))
        for i in range(3):
            await spool.append(record(i))
        segment = overwrite_first_segment(tmp_path, 64 + 30, b"\x00\x00")  # record 1's data
        batch = await spool.read(100, timeout_secs=0)
        assert batch is not None and batch.entries == record(0) + record(2)
        assert (spool.corrupt_records, spool.corrupt_bytes) == (1, 64)
        await spool.close()
        assert spool_messages(caplog, logging.WARNING) == [
            f"spool {segment}: skipped 64 corrupt bytes at offset 64 while reading"
        ]

    with caplog.at_level(logging.WARNING, logger="logstream.spool"):
        run(scenario())
