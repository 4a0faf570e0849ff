"""The disk spool's smaller promises (logstream.spool): ack after close, descriptors,
what it logs, the cursor's slots and the file layout."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from logstream.spool import Spool, SpoolClosed, SpoolSettings
from tests.support.inputs import Runner


@pytest.fixture
def run() -> Runner:
    return Runner("uvloop")


NEVER = SpoolSettings(fsync="never")


def record(i: int, entries: int = 2, size: int = 20) -> list[bytes]:
    return [f"r{i}.{j}:".encode().ljust(size, b"x") for j in range(entries)]


def expected(indexes: range) -> list[bytes]:
    return [entry for i in indexes for entry in record(i)]


async def drain(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    while (batch := await spool.read(1000, timeout_secs=0)) is not None:
        out += batch.entries
        spool.ack(batch)
    return out


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_ack_after_close_is_ignored_logged_and_read_again_after_a_restart(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(3):
            await spool.append(record(i))
        batch = await spool.read(1)
        assert batch is not None and batch.entries == record(0)
        await spool.close()
        with caplog.at_level(logging.WARNING, logger="logstream.spool"):
            spool.ack(batch)  # no error
        assert (
            f"spool {tmp_path}: ack after close ignored; its 2 entries will be read again "
            "after a restart" in caplog.text
        )
        assert spool.pending_entries == 6
        again = Spool.open(tmp_path, NEVER)
        assert await drain(again) == expected(range(3))
        await again.close()

    run(scenario())


def test_a_batch_from_another_spool_is_refused(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        one = Spool.open(tmp_path / "one", NEVER)
        two = Spool.open(tmp_path / "two", NEVER)
        await one.append(record(0))
        await two.append(record(0))
        batch_one = await one.read(10)
        batch_two = await two.read(10)
        assert batch_one is not None and batch_two is not None
        assert batch_one.seq == batch_two.seq
        with pytest.raises(ValueError, match="not an unacknowledged batch of this spool"):
            one.ack(batch_two)
        assert one.pending_entries == 2
        one.ack(batch_one)
        assert one.pending_entries == 0
        await one.close()
        await two.close()

    run(scenario())


@pytest.mark.parametrize("fsync", ["never", "interval"])
def test_rotated_segments_do_not_keep_descriptors_open(
    run: Runner, tmp_path: Path, fsync: str
) -> None:
    """With fsync never a rotated segment's descriptor is closed at once; otherwise by
    the next fsync round (here: close). Acked segments' read descriptors go with them."""

    async def scenario() -> None:
        spool = Spool.open(
            tmp_path, SpoolSettings(segment_bytes=100, fsync=fsync, fsync_interval_secs=3600)
        )
        before = open_fds()
        for i in range(40):
            await spool.append(record(i))
        if fsync == "never":
            assert open_fds() <= before + 2
        assert await drain(spool) == expected(range(40))
        await spool.close()
        assert open_fds() <= before - 1  # the cursor's descriptor too

    run(scenario())


def test_drop_oldest_logs_the_segment_and_its_lost_entries(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        spool = Spool.open(
            tmp_path, SpoolSettings(max_bytes=300, segment_bytes=150, when_full="drop_oldest")
        )
        with caplog.at_level(logging.WARNING, logger="logstream.spool"):
            for i in range(5):  # 64-byte records, 3 to a segment
                await spool.append(record(i))
        assert spool.dropped_entries == 6
        assert f"spool {tmp_path} is full (max_bytes 300): dropped segment " in caplog.text
        assert "00000000000000000001.seg with 6 unacknowledged entries" in caplog.text
        await spool.close()

    run(scenario())


def test_a_corrupt_cursor_is_logged(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        await spool.append(record(0))
        await spool.close()

    run(scenario())
    (tmp_path / "cursor").write_bytes(b"\x01" * 1024)
    with caplog.at_level(logging.WARNING, logger="logstream.spool"):
        spool = Spool.open(tmp_path, NEVER)
    assert spool.recovery.cursor == "corrupt"
    assert [r.getMessage() for r in caplog.records if r.name == "logstream.spool"] == [
        f"spool {tmp_path}: cursor file is corrupt; reading from the oldest segment"
    ]
    run(spool.close())


def test_the_cursor_alternates_between_its_two_slots_and_open_takes_the_newest(
    run: Runner, tmp_path: Path
) -> None:
    """Each ack writes the other slot (offsets 0 and 512); open takes the higher sequence
    whichever slot holds it."""

    async def scenario(acks: int) -> None:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(acks):
            await spool.append(record(i))
            batch = await spool.read(10)
            assert batch is not None
            spool.ack(batch)
        await spool.append(record(acks))
        await spool.close()

    for acks in (1, 2, 3):
        for p in tmp_path.iterdir():
            p.unlink()
        run(scenario(acks))
        raw = (tmp_path / "cursor").read_bytes()
        assert raw[0:4] == b"LSC2" and raw[512:516] == b"LSC2"
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.cursor == "ok"
        assert spool.recovery.entries == 2  # only the unacknowledged last record
        assert run(drain(spool)) == record(acks)
        run(spool.close())


def test_segment_and_cursor_files_are_named_and_readable_as_documented(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path / "a" / "b", NEVER)  # parents are created
        await spool.append(record(0))
        await spool.close()

    old = os.umask(0o022)
    try:
        run(scenario())
    finally:
        os.umask(old)
    directory = tmp_path / "a" / "b"
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["00000000000000000001.seg", "cursor"]
    for name in names:
        assert (directory / name).stat().st_mode & 0o777 == 0o644


def test_after_close_append_raises_read_returns_none_and_close_again_is_a_no_op(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        await spool.append(record(0))
        await spool.close()
        with pytest.raises(SpoolClosed, match=f"spool {tmp_path} is closed"):
            await spool.append(record(1))
        with pytest.raises(SpoolClosed):
            await spool.append([])  # refused before the empty-batch shortcut
        assert await spool.read(10) is None  # even with data left, and no waiting
        await spool.close()
        again = Spool.open(tmp_path, NEVER)
        assert await drain(again) == record(0)
        await again.close()

    run(scenario())


def test_appends_after_a_restart_with_everything_acked_survive_the_next_restart(
    run: Runner, tmp_path: Path
) -> None:
    """Every segment acknowledged and deleted: the next segment's id must be above the
    cursor's, or the next open would delete it as older than the cursor."""

    async def first() -> None:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(3):
            await spool.append(record(i))
        assert await drain(spool) == expected(range(3))
        await spool.close()

    async def second() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.entries == 0 and spool.recovery.cursor == "ok"
        await spool.append(record(3))
        await spool.close()

    async def third() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.cursor == "ok" and spool.recovery.entries == 2
        assert spool.recovery.segments == 1 and spool.recovery.records == 1
        assert await drain(spool) == record(3)
        await spool.close()

    run(first())
    run(second())
    run(third())


def test_fsync_always_fsyncs_an_acks_cursor_without_waiting_for_an_append(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="always"))
        await spool.append(record(0))
        after_append = spool.syncs
        assert after_append >= 1
        batch = await spool.read(10)
        assert batch is not None
        spool.ack(batch)
        for _ in range(200):
            if spool.syncs > after_append:
                break
            await asyncio.sleep(0.005)
        assert spool.syncs == after_append + 1
        await spool.close()

    run(scenario())


def test_an_idle_spool_does_no_fsync_rounds_and_fsync_never_does_none_at_all(
    run: Runner, tmp_path: Path
) -> None:
    async def idle() -> None:
        spool = Spool.open(
            tmp_path / "idle", SpoolSettings(fsync="interval", fsync_interval_secs=0.005)
        )
        assert await spool.read(1, timeout_secs=0.05) is None  # starts the sync task
        assert spool.syncs == 1  # the cursor open wrote for a new spool
        assert await spool.read(1, timeout_secs=0.05) is None
        assert spool.syncs == 1  # nothing written since: no round counted
        await spool.close()
        assert spool.syncs == 1

    async def never() -> None:
        spool = Spool.open(tmp_path / "never", SpoolSettings(fsync="never", segment_bytes=100))
        for i in range(5):
            await spool.append(record(i))
        await asyncio.sleep(0.02)
        assert spool.syncs == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no sync task
        await spool.close()

    run(idle())
    run(never())


def test_corruption_found_while_reading_an_older_segment_leaves_nothing_pending(
    run: Runner, tmp_path: Path
) -> None:
    """Entries of a record that turned corrupt after open will never be acked: once the
    reader leaves their segment they are no longer pending (entries nor bytes)."""

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(segment_bytes=200, fsync="never"))
        for i in range(8):  # 64-byte records, 4 to a segment
            await spool.append(record(i))
        first = segment_files(tmp_path)[0]
        data = bytearray(first.read_bytes())
        data[2 * 64 + 30] ^= 0x5A  # record 2's data
        first.write_bytes(bytes(data))
        out: list[bytes] = []
        while (batch := await spool.read(2, timeout_secs=0)) is not None:
            out += batch.entries
            spool.ack(batch)
        assert out == expected(range(2)) + expected(range(3, 8))
        assert spool.corrupt_records == 1
        assert (spool.pending_entries, spool.pending_bytes) == (0, 0)
        await spool.close()

    run(scenario())


def test_a_fully_acked_segment_being_written_keeps_taking_appends(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        await spool.append(record(0))
        assert await drain(spool) == record(0)
        await spool.append(record(1))
        assert len(segment_files(tmp_path)) == 1
        await spool.close()
        again = Spool.open(tmp_path, NEVER)
        assert again.recovery.entries == 2
        assert await drain(again) == record(1)
        await again.close()

    run(scenario())


def test_a_full_block_spool_closes_its_acked_segment_early_instead_of_waiting(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(max_bytes=300, segment_bytes=300))
        for i in range(4):  # 256 bytes: the segment is still being written
            await spool.append(record(i))
        assert await drain(spool) == expected(range(4))
        await asyncio.wait_for(spool.append(record(4)), 2)
        assert spool.blocked_secs == 0 and spool.disk_bytes == 64
        assert await drain(spool) == record(4)
        await spool.close()

    run(scenario())


def test_an_append_blocked_for_room_is_told_the_spool_closed(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(max_bytes=300, segment_bytes=150))
        for i in range(4):
            await spool.append(record(i))
        blocked = asyncio.ensure_future(spool.append(record(4)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        await spool.close()
        with pytest.raises(SpoolClosed, match=f"^spool {tmp_path} is closed$"):
            await blocked

    run(scenario())


def test_fsync_always_fsyncs_each_of_sequential_appends(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="always"))
        await spool.append(record(0))
        first = spool.syncs
        for i in range(1, 6):
            await spool.append(record(i))
            assert spool.syncs == first + i
        await spool.close()

    run(scenario())


def test_open_counts_every_kept_segment_on_disk_and_deletes_segments_behind_the_cursor(
    run: Runner, tmp_path: Path
) -> None:
    """A segment older than the cursor's (its deletion lost in a crash) is deleted at
    open, not read again; disk_bytes is the size of every segment kept."""
    spool_settings = SpoolSettings(segment_bytes=200, fsync="never")
    saved: dict[str, bytes] = {}

    async def first() -> None:
        spool = Spool.open(tmp_path, spool_settings)
        for i in range(12):  # 64-byte records, 4 to a segment: 3 segments
            await spool.append(record(i))
        oldest = segment_files(tmp_path)[0]
        saved[oldest.name] = oldest.read_bytes()
        for _ in range(5):  # segment 1 and one record of segment 2
            batch = await spool.read(2)
            assert batch is not None
            spool.ack(batch)
        await spool.close()

    run(first())
    ((name, data),) = saved.items()
    assert not (tmp_path / name).exists()
    (tmp_path / name).write_bytes(data)
    spool = Spool.open(tmp_path, spool_settings)
    assert not (tmp_path / name).exists()
    assert spool.recovery.entries == 14 and spool.recovery.segments == 2
    assert spool.disk_bytes == sum(p.stat().st_size for p in segment_files(tmp_path)) == 512
    assert run(drain(spool)) == expected(range(5, 12))
    run(spool.close())


def test_blocked_secs_adds_up_over_appends_that_waited(run: Runner, tmp_path: Path) -> None:
    async def block_once(spool: Spool) -> None:
        blocked = asyncio.ensure_future(spool.append(record(99)))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        while not blocked.done():  # acks free the oldest segment
            batch = await spool.read(1, timeout_secs=0)
            assert batch is not None
            spool.ack(batch)
            await asyncio.sleep(0)
        await blocked

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(max_bytes=300, segment_bytes=150))
        for i in range(4):
            await spool.append(record(i))
        await block_once(spool)
        first = spool.blocked_secs
        assert first >= 0.09
        while spool.disk_bytes + 64 <= 300:
            await spool.append(record(0))
        await block_once(spool)
        assert spool.blocked_secs >= first + 0.09
        await spool.close()

    run(scenario())


def test_a_write_the_disk_refuses_fails_the_append_and_leaves_no_partial_record(
    run: Runner, tmp_path: Path
) -> None:
    """A real failed write: with the process's file-size limit lowered for a moment, the
    kernel writes the 11th record half and then refuses (EFBIG). The append raises, the
    half record is cut off the segment, nothing of it is counted or read, and the spool
    takes and reads appends afterwards (at the cut: nothing corrupt in between)."""
    import errno
    import resource
    import signal

    record_bytes = 16 + 8 + 200 + 6
    limit = 10 * record_bytes + record_bytes // 2

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        appended, refused = 0, None
        try:
            for i in range(1000):
                await spool.append([b"%04d" % i + b"x" * 196, b"second"])
                appended += 1
        except OSError as exc:
            refused = exc
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert refused is not None and refused.errno == errno.EFBIG
        assert appended == 10 and spool.pending_entries == 20
        assert [p.stat().st_size for p in segment_files(tmp_path)] == [10 * record_bytes]
        await spool.append([b"after", b"the failure"])
        entries = await drain(spool)
        pairs = [[b"%04d" % i + b"x" * 196, b"second"] for i in range(10)]
        assert entries == [e for pair in pairs for e in pair] + [b"after", b"the failure"]
        assert spool.corrupt_records == 0
        await spool.close()

    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG rather than a signal
    try:
        run(scenario())
    finally:
        signal.signal(signal.SIGXFSZ, previous)

    async def reopen() -> tuple[int, int, int]:
        spool = Spool.open(tmp_path, SpoolSettings())
        report = spool.recovery
        await spool.close()
        return report.entries, report.torn_tail_bytes, report.corrupt_records

    assert run(reopen()) == (0, 0, 0)  # everything was acked; nothing torn
