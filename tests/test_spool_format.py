"""The spool's record format and corruption accounting, case by case (issue 13's
mutation testing found these unguarded by the deterministic tests; the property test
in test_spool.py covers random damage, but is too slow to run per mutant).

Each bad record here has a valid crc, so only the format rules catch it."""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from pathlib import Path

import pytest

from logstream.spool import MAGIC, Spool, SpoolSettings, encode_record
from tests.support.inputs import Runner
from tests.test_spool import (
    CAPPED,
    NEVER,
    big,
    drain,
    expected,
    fill,
    flip,
    frames,
    record,
    segments,
)


@pytest.fixture
def run() -> Runner:
    return Runner("asyncio")


def crafted(count: int, body: bytes) -> bytes:
    """A record header claiming ``count`` entries over ``body``, with a correct crc."""
    sizes = struct.pack("<II", len(body), count)
    return MAGIC + struct.pack("<I", zlib.crc32(body, zlib.crc32(sizes))) + sizes + body


def test_records_of_one_entry_and_of_empty_entries_come_back(run: Runner, tmp_path: Path) -> None:
    batches = [[b"only"], [b"", b""], [b"", b"x"], [b""], [b"a", b"", b"bc"]]

    async def write() -> None:
        spool = Spool.open(tmp_path, NEVER)
        for batch in batches:
            await spool.append(batch)
        await spool.close()

    async def read() -> list[bytes]:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.corrupt_records == 0
        assert spool.recovery.records == 5 and spool.recovery.entries == 9
        got = await drain(spool)
        await spool.close()
        return got

    run(write())
    assert run(read()) == [entry for batch in batches for entry in batch]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (crafted(0, b""), "no entries"),
        (crafted(0, b"abcd"), "no entries, some bytes"),
        (crafted(1000, b"abcdefgh"), "more entry lengths than bytes"),
        (crafted(2, struct.pack("<II", 3, 3) + b"abcd"), "lengths not summing to the data"),
    ],
)
def test_a_record_breaking_the_format_is_corrupt_even_with_a_good_crc(
    run: Runner, tmp_path: Path, bad: bytes, why: str
) -> None:
    """In the middle of a segment and at the end of an older one (not the newest, where
    it would be a torn tail): skipped and counted,
    the intact records around it are read, and open never fails."""
    good = [encode_record(record(i)) for i in range(4)]
    (tmp_path / f"{1:020d}.seg").write_bytes(good[0] + bad + good[1])
    (tmp_path / f"{2:020d}.seg").write_bytes(good[2] + bad)
    (tmp_path / f"{3:020d}.seg").write_bytes(good[3])

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.corrupt_records == 2, why
        assert spool.recovery.corrupt_bytes == 2 * len(bad)
        assert spool.recovery.records == 4 and spool.recovery.torn_tail_bytes == 0
        assert await drain(spool) == expected(range(4))
        assert spool.corrupt_records == 2  # reading past them counts nothing again
        await spool.close()

    run(scenario())


def test_corruption_found_at_open_is_counted_once_logged_with_file_and_offset(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(run, tmp_path, 8, SpoolSettings(segment_bytes=200, fsync="never"))
    first, second = segments(tmp_path)[:2]
    (offset1, size1), (offset2, size2) = (
        frames(first.read_bytes())[1],
        frames(second.read_bytes())[0],
    )
    flip(first, offset1 + 20)
    flip(second, offset2 + 20)
    records_per_segment = len(frames(first.read_bytes()))

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.corrupt_records == 2
        assert spool.recovery.corrupt_bytes == size1 + size2
        # Only the intact records wait: their exact bytes on disk.
        intact = [r for r in range(8) if r not in (1, records_per_segment)]
        assert spool.pending_entries == 2 * len(intact)
        assert spool.pending_bytes == sum(len(encode_record(record(i))) for i in intact)
        assert await drain(spool) == expected(intact)
        assert (spool.corrupt_records, spool.corrupt_bytes) == (2, size1 + size2)
        await spool.close()

    with caplog.at_level(logging.WARNING, logger="logstream.spool"):
        run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"spool {first}: skipped 1 corrupt stretch(es), {size1} bytes, the first at offset "
        f"{offset1}",
        f"spool {second}: skipped 1 corrupt stretch(es), {size2} bytes, the first at offset "
        f"{offset2}",
    ]


def test_garbage_after_an_older_segment_and_a_torn_tail_are_logged_where_they_are(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(run, tmp_path, 6, SpoolSettings(segment_bytes=200, fsync="never"))
    first, *_, last = segments(tmp_path)
    first_size, last_size = first.stat().st_size, last.stat().st_size
    with first.open("ab") as file:
        file.write(MAGIC + b"\x00" * 6)
    with last.open("ab") as file:
        file.write(b"\xffLS")  # shorter than a record header

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.corrupt_records == 1 and spool.recovery.corrupt_bytes == 10
        assert spool.recovery.torn_tail_bytes == 3
        assert last.stat().st_size == last_size
        assert await drain(spool) == expected(range(6))
        await spool.close()

    with caplog.at_level(logging.WARNING, logger="logstream.spool"):
        run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"spool {first}: skipped 1 corrupt stretch(es), 10 bytes, the first at offset {first_size}",
        f"spool {last}: truncated a torn tail of 3 bytes at offset {last_size}",
    ]


def test_a_false_magic_inside_a_corrupt_stretch_is_passed_over(run: Runner, tmp_path: Path) -> None:
    """Garbage holding the record magic more than once before the next good record."""
    good = [encode_record(record(i)) for i in range(3)]
    garbage = b"xx" + MAGIC + b"\x01\x02" + MAGIC + b"\x00" * 20
    (tmp_path / f"{1:020d}.seg").write_bytes(good[0] + garbage + good[1] + good[2])

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert (spool.recovery.corrupt_records, spool.recovery.corrupt_bytes) == (1, len(garbage))
        assert await drain(spool) == expected(range(3))
        await spool.close()

    run(scenario())


def test_corruption_appearing_after_open_is_counted_per_stretch_and_logged(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> list[tuple[int, int]]:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(6):
            await spool.append(record(i))
        (path,) = segments(tmp_path)
        spans = frames(path.read_bytes())
        flip(path, spans[1][0] + 20)
        flip(path, spans[5][0] + 20)  # the last record: nothing valid after it
        assert await drain(spool) == expected([0, 2, 3, 4])
        assert spool.corrupt_records == 2
        assert spool.corrupt_bytes == spans[1][1] + spans[5][1]
        await spool.close()
        return spans

    with caplog.at_level(logging.WARNING, logger="logstream.spool"):
        spans = run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].endswith(
        f": skipped {spans[1][1]} corrupt bytes at offset {spans[1][0]} while reading"
    )
    assert messages[1].endswith(
        f": skipped {spans[5][1]} corrupt bytes at offset {spans[5][0]} while reading"
    )


def test_drop_oldest_counts_only_the_unacknowledged_part_of_the_dropped_segment(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Record 0 was delivered and acked; its segment still holds record 1 when the
    spool is full, so dropping the segment loses record 1 only."""

    async def scenario() -> Path:
        spool = Spool.open(tmp_path, SpoolSettings(**CAPPED, when_full="drop_oldest"))  # type: ignore[arg-type]
        for i in range(6):
            await spool.append(big(i))
        batch = await spool.read(1)
        assert batch is not None and batch.entries == big(0)
        spool.ack(batch)
        oldest = segments(tmp_path)[0]
        await spool.append(big(6))
        assert spool.dropped_entries == 2
        assert (spool.pending_entries, spool.pending_bytes) == (10, 5 * 500)
        assert await drain(spool) == [e for i in range(2, 7) for e in big(i)]
        assert (spool.pending_entries, spool.pending_bytes) == (0, 0)
        await spool.close()
        return oldest

    with caplog.at_level(logging.WARNING, logger="logstream.spool"):
        oldest = run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        f"spool {tmp_path} is full (max_bytes 3000): dropped segment {oldest.name} with 2 "
        "unacknowledged entries"
    ]


def test_records_crossing_the_read_chunk_come_back_whole(run: Runner, tmp_path: Path) -> None:
    """Reads go through a 1 MiB buffer: records straddling its end, and the last one
    of the segment, are read whole (not taken for corruption)."""
    entries = [bytes([65 + i]) * 400_000 for i in range(5)]

    async def scenario() -> list[bytes]:
        spool = Spool.open(tmp_path, SpoolSettings(segment_bytes=1 << 22, fsync="never"))
        for entry in entries:
            await spool.append([entry])
        got = await drain(spool, max_entries=1)
        assert spool.corrupt_records == 0
        await spool.close()
        return got

    assert run(scenario()) == entries


def test_read_with_a_short_timeout_still_waits_for_an_append(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        with pytest.raises(ValueError, match="max_entries must be at least 1, value: 0"):
            await spool.read(0)

        async def later() -> None:
            await asyncio.sleep(0.05)
            await spool.append(record(1))

        task = asyncio.create_task(later())
        batch = await spool.read(10, timeout_secs=0.5)
        await task
        assert batch is not None and batch.entries == record(1)
        await spool.close()

    run(scenario())


def test_a_stray_byte_before_a_record_costs_that_byte_only(run: Runner, tmp_path: Path) -> None:
    """At open and while reading, the next record may start one byte further on."""
    good = [encode_record(record(i)) for i in range(4)]
    (tmp_path / f"{1:020d}.seg").write_bytes(good[0] + b"?" + good[1])

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert (spool.recovery.corrupt_records, spool.recovery.corrupt_bytes) == (1, 1)
        assert await drain(spool) == expected(range(2))
        await spool.append(record(2))
        await spool.append(record(3))
        path = segments(tmp_path)[-1]
        data = path.read_bytes()
        # After open: record 2's first byte turns into garbage one byte before record 3,
        # i.e. a stretch of record 2's length, and record 3 right behind it.
        path.write_bytes(b"?" * len(good[2]) + data[len(good[2]) :])
        assert await drain(spool) == expected([3])
        assert (spool.corrupt_records, spool.corrupt_bytes) == (2, 1 + len(good[2]))
        await spool.close()

    run(scenario())


def test_a_newest_segment_torn_inside_its_first_record_is_removed(
    run: Runner, tmp_path: Path
) -> None:
    good = [encode_record(record(i)) for i in range(2)]
    (tmp_path / f"{1:020d}.seg").write_bytes(good[0])
    (tmp_path / f"{2:020d}.seg").write_bytes(good[1][:30])

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.torn_tail_bytes == 30
        assert spool.recovery.corrupt_records == 0
        assert not (tmp_path / f"{2:020d}.seg").exists()
        assert await drain(spool) == expected([0])
        await spool.close()

    run(scenario())
