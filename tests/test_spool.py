"""The disk spool (logstream.spool): order, acks, caps, crash recovery and corruption."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logstream.spool import (
    HEADER_BYTES,
    MAGIC,
    Spool,
    SpoolBatch,
    SpoolClosed,
    SpoolSettings,
    encode_record,
)
from tests.support.inputs import Runner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run() -> Runner:
    return Runner("uvloop")


def record(i: int, entries: int = 2, size: int = 20) -> list[bytes]:
    """Entries of record ``i``: distinct, ASCII, ``size`` bytes each."""
    return [f"r{i}.{j}:".encode().ljust(size, b"x") for j in range(entries)]


def frame_bytes(entries: list[bytes]) -> int:
    return HEADER_BYTES + 4 * len(entries) + sum(map(len, entries))


async def drain(spool: Spool, max_entries: int = 1000) -> list[bytes]:
    """Read and acknowledge everything there is now."""
    out: list[bytes] = []
    while (batch := await spool.read(max_entries, timeout_secs=0)) is not None:
        out += batch.entries
        spool.ack(batch)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of each record of an intact segment file."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos + 8)
        out.append((pos, HEADER_BYTES + length))
        pos += HEADER_BYTES + length
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def fill(run: Runner, directory: Path, count: int, spool_settings: SpoolSettings) -> None:
    """A closed spool holding records 0..count-1, none read."""

    async def scenario() -> None:
        spool = Spool.open(directory, spool_settings)
        for i in range(count):
            await spool.append(record(i))
        await spool.close()

    run(scenario())


def expected(indexes: range | list[int]) -> list[bytes]:
    return [entry for i in indexes for entry in record(i)]


NEVER = SpoolSettings(fsync="never")


# --------------------------------------------------------------------------- round trip


def test_entries_come_back_in_order_across_segments_and_outstanding_reads(
    run: Runner, tmp_path: Path
) -> None:
    """Reads run ahead of acks, batches hold whole records, and order is kept."""

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(segment_bytes=300, fsync="never"))
        assert spool.recovery.cursor == "new"
        for i in range(30):
            await spool.append(record(i))
        assert len(segments(tmp_path)) > 3
        assert spool.pending_entries == 60
        batches = []
        while (batch := await spool.read(5, timeout_secs=0)) is not None:
            assert len(batch.entries) % 2 == 0  # whole records only
            batches.append(batch)
        assert [e for b in batches for e in b.entries] == expected(range(30))
        assert spool.pending_entries == 60  # read is not acked
        for batch in batches:
            spool.ack(batch)
        assert spool.pending_entries == 0 and spool.pending_bytes == 0
        assert segments(tmp_path) == [] and spool.disk_bytes == 0
        await spool.close()

    run(scenario())


def test_a_record_larger_than_max_entries_is_returned_whole(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        await spool.append(record(0, entries=50))
        batch = await spool.read(3)
        assert batch is not None and batch.entries == record(0, entries=50)
        await spool.close()

    run(scenario())


def test_read_waits_for_an_append_and_times_out_with_none(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert await spool.read(10, timeout_secs=0.01) is None
        waiting = asyncio.create_task(spool.read(10))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await spool.append([b"hello"])
        batch = await waiting
        assert batch is not None and batch.entries == [b"hello"]
        spool.ack(batch)
        blocked = asyncio.create_task(spool.read(10))
        await asyncio.sleep(0.01)
        await spool.close()
        assert await blocked is None
        with pytest.raises(SpoolClosed):
            await spool.append([b"late"])

    run(scenario())


def test_concurrent_reads_take_turns_and_never_share_a_record(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        readers = [asyncio.create_task(spool.read(1)) for _ in range(3)]
        await asyncio.sleep(0.01)
        for i in range(3):
            await spool.append(record(i))
        batches = await asyncio.gather(*readers)
        assert [b.entries for b in batches if b is not None] == [record(i) for i in range(3)]
        await spool.close()

    run(scenario())


def test_acks_out_of_order_move_the_cursor_only_over_a_complete_prefix(
    run: Runner, tmp_path: Path
) -> None:
    """The second batch acked first: a restart still reads the first one again."""

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(3):
            await spool.append(record(i))
        first = await spool.read(1)
        second = await spool.read(1)
        assert first is not None and second is not None
        spool.ack(second)
        with pytest.raises(ValueError, match="not an unacknowledged batch"):
            spool.ack(second)
        await spool.close()
        again = Spool.open(tmp_path, NEVER)
        assert again.recovery.cursor == "ok"
        assert await drain(again) == expected(range(3))
        await again.close()

    run(scenario())


def test_restart_reads_again_exactly_the_unacknowledged_entries(
    run: Runner, tmp_path: Path
) -> None:
    spool_settings = SpoolSettings(segment_bytes=200, fsync="never")

    async def first_run() -> None:
        spool = Spool.open(tmp_path, spool_settings)
        for i in range(20):
            await spool.append(record(i))
        for _ in range(7):  # records 0..6 acked, 7 read but not acked
            batch = await spool.read(1)
            assert batch is not None
            spool.ack(batch)
        assert await spool.read(1) is not None
        await spool.close()

    async def second_run() -> None:
        spool = Spool.open(tmp_path, spool_settings)
        report = spool.recovery
        assert report.cursor == "ok" and report.entries == 26 and report.records == 13
        assert report.torn_tail_bytes == report.corrupt_records == 0
        assert spool.pending_entries == 26
        await spool.append(record(20))  # goes to a fresh segment
        assert await drain(spool) == expected(range(7, 21))
        await spool.close()
        assert segments(tmp_path) == []

    run(first_run())
    run(second_run())


def test_empty_appends_are_ignored_and_impossible_records_refused(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(max_bytes=1000, segment_bytes=500))
        await spool.append([])
        with pytest.raises(ValueError, match="can never fit"):
            await spool.append([b"x" * 1000])
        assert spool.pending_entries == 0 and segments(tmp_path) == []
        await spool.close()

    run(scenario())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segment_bytes": 0}, "segment_bytes must be at least 1, value: 0"),
        ({"max_bytes": 10, "segment_bytes": 20}, "max_bytes must be at least segment_bytes"),
        ({"fsync_interval_secs": 0}, "fsync_interval_secs must be positive, value: 0"),
        ({"when_full": "drop_newest"}, "when_full must be block or drop_oldest"),
        ({"fsync": "sometimes"}, "fsync must be always, interval or never"),
    ],
)
def test_settings_name_the_bad_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpoolSettings(**kwargs)  # type: ignore[arg-type]


def test_the_smallest_settings_are_accepted() -> None:
    assert SpoolSettings(max_bytes=1, segment_bytes=1).segment_bytes == 1


# --------------------------------------------------------------------------- size cap


def big(i: int) -> list[bytes]:
    """Record ``i`` of 500 bytes: two fill a segment of CAPPED, three segments the spool."""
    entries = [f"{i}:".encode().ljust(238, b"b"), f"{i}:".encode().ljust(238, b"c")]
    assert frame_bytes(entries) == 500
    return entries


CAPPED = {"max_bytes": 3000, "segment_bytes": 1000, "fsync": "never"}


def test_block_waits_until_an_ack_frees_a_whole_segment(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(**CAPPED, when_full="block"))  # type: ignore[arg-type]
        for i in range(6):
            await spool.append(big(i))
        assert spool.disk_bytes == 3000
        blocked = asyncio.create_task(spool.append(big(6)))
        await asyncio.sleep(0.02)
        assert not blocked.done()
        first = await spool.read(1)
        assert first is not None
        spool.ack(first)  # half a segment: nothing freed yet
        await asyncio.sleep(0.02)
        assert not blocked.done()
        second = await spool.read(1)
        assert second is not None
        spool.ack(second)
        await asyncio.wait_for(blocked, 1)
        assert spool.disk_bytes == 2500 and spool.blocked_secs > 0
        assert spool.dropped_entries == 0
        assert await drain(spool) == [e for i in range(2, 7) for e in big(i)]
        await spool.close()

    run(scenario())


def test_block_append_is_released_with_spool_closed_at_close(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(**CAPPED, when_full="block"))  # type: ignore[arg-type]
        for i in range(6):
            await spool.append(big(i))
        blocked = asyncio.create_task(spool.append(big(6)))
        await asyncio.sleep(0.01)
        await spool.close()
        with pytest.raises(SpoolClosed):
            await blocked

    run(scenario())


def test_drop_oldest_deletes_whole_segments_and_counts_their_entries(
    run: Runner, tmp_path: Path
) -> None:
    """A batch read from a dropped segment can still be acked; the count is exact."""

    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(**CAPPED, when_full="drop_oldest"))  # type: ignore[arg-type]
        for i in range(6):
            await spool.append(big(i))
        in_flight = await spool.read(1)
        assert in_flight is not None and in_flight.entries == big(0)
        for i in range(6, 10):
            await spool.append(big(i))
            assert spool.disk_bytes <= 3000
        assert spool.dropped_entries == 8  # records 0..3, two entries each
        assert spool.pending_entries == 12
        spool.ack(in_flight)
        assert spool.pending_entries == 12
        assert await drain(spool) == [e for i in range(4, 10) for e in big(i)]
        assert spool.pending_entries == 0
        await spool.close()

    run(scenario())


def test_drop_oldest_can_drop_the_segment_being_written(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool.open(
            tmp_path,
            SpoolSettings(max_bytes=1200, segment_bytes=1200, when_full="drop_oldest"),
        )
        for i in range(3):
            await spool.append(big(i))
        assert spool.dropped_entries == 4
        assert spool.disk_bytes == 500
        assert await drain(spool) == big(2)
        await spool.close()

    run(scenario())


# --------------------------------------------------------------------------- crashes

WRITER = """
import asyncio, sys
from pathlib import Path
from logstream.spool import Spool, SpoolSettings

async def main() -> None:
    spool = Spool.open(Path(sys.argv[1]), SpoolSettings(segment_bytes=20_000, fsync="never"))
    for i in range(10**9):
        await spool.append([b"%d" % i, b"p" * (i % 700)])
        print(i, flush=True)

asyncio.run(main())
"""


def test_kill_9_loses_nothing_that_append_returned(run: Runner, tmp_path: Path) -> None:
    """Every number the writer printed comes back once, in order, after a SIGKILL."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    directory = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, str(script), str(directory)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    seen = 0
    for line in child.stdout:
        seen = int(line) + 1
        if seen >= 3000:
            break
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=10)
    printed = seen + len(rest.split())
    assert child.returncode == -signal.SIGKILL

    async def recover() -> tuple[list[bytes], Spool]:
        spool = Spool.open(directory, NEVER)
        entries = await drain(spool)
        await spool.close()
        return entries, spool

    entries, spool = run(recover())
    numbers = [int(e) for e in entries[0::2]]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) >= printed
    assert entries[1::2] == [b"p" * (i % 700) for i in numbers]
    assert spool.recovery.corrupt_records == 0
    assert len(segments(directory)) == 0


def test_a_torn_last_record_is_truncated_counted_and_appends_go_on(
    run: Runner, tmp_path: Path
) -> None:
    fill(run, tmp_path, 5, NEVER)
    (path,) = segments(tmp_path)
    size = path.stat().st_size
    last = frame_bytes(record(4))
    os.truncate(path, size - 10)

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.torn_tail_bytes == last - 10
        assert spool.recovery.corrupt_records == 0 and spool.recovery.entries == 8
        assert path.stat().st_size == size - last
        await spool.append(record(99))
        assert len(segments(tmp_path)) == 2
        assert await drain(spool) == expected([0, 1, 2, 3, 99])
        await spool.close()

    run(scenario())
    again = Spool.open(tmp_path, NEVER)
    assert again.recovery.torn_tail_bytes == 0 and again.recovery.entries == 0


@pytest.mark.parametrize("where", ["magic", "length", "payload", "crc"])
def test_a_corrupt_record_mid_segment_is_skipped_and_counted(
    run: Runner, tmp_path: Path, where: str
) -> None:
    fill(run, tmp_path, 10, NEVER)
    (path,) = segments(tmp_path)
    offset, size = frames(path.read_bytes())[4]
    flip(path, offset + {"magic": 1, "crc": 5, "length": 10, "payload": size - 3}[where])

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.corrupt_records == 1
        assert spool.recovery.corrupt_bytes == size
        assert spool.corrupt_records == 1
        assert spool.recovery.entries == 18
        assert await drain(spool) == expected([0, 1, 2, 3, 5, 6, 7, 8, 9])
        await spool.close()

    run(scenario())


def test_garbage_at_the_end_of_an_older_segment_is_corrupt_not_torn(
    run: Runner, tmp_path: Path
) -> None:
    fill(run, tmp_path, 10, SpoolSettings(segment_bytes=200, fsync="never"))
    first = segments(tmp_path)[0]
    with first.open("ab") as file:
        file.write(MAGIC + b"\xff" * 30)

    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.corrupt_records == 1 and spool.recovery.corrupt_bytes == 34
        assert spool.recovery.torn_tail_bytes == 0
        assert await drain(spool) == expected(range(10))
        await spool.close()

    run(scenario())


def test_corruption_that_appears_after_open_is_skipped_while_reading(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(3):
            await spool.append(record(i))
        (path,) = segments(tmp_path)
        offset, _ = frames(path.read_bytes())[1]
        flip(path, offset + HEADER_BYTES + 1)
        assert await drain(spool) == expected([0, 2])
        assert spool.corrupt_records == 1
        await spool.close()

    run(scenario())


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_cursor_means_reading_from_the_oldest_segment(
    run: Runner, tmp_path: Path, damage: str
) -> None:
    async def first_run() -> None:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(6):
            await spool.append(record(i))
        batch = await spool.read(4)
        assert batch is not None
        spool.ack(batch)
        await spool.close()

    run(first_run())
    cursor = tmp_path / "cursor"
    if damage == "missing":
        cursor.unlink()
    else:
        cursor.write_bytes(b"\x00garbage" * 5)

    async def second_run() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.cursor == damage
        assert await drain(spool) == expected(range(6))
        await spool.close()

    run(second_run())
    assert Spool.open(tmp_path, NEVER).recovery.cursor == "ok"


def test_a_torn_cursor_write_falls_back_to_the_previous_cursor(run: Runner, tmp_path: Path) -> None:
    """The cursor's two slots are written in turn: tearing the newest leaves the other."""

    async def first_run() -> None:
        spool = Spool.open(tmp_path, NEVER)
        for i in range(4):
            await spool.append(record(i))
        batches = [await spool.read(1) for _ in range(4)]
        for batch in batches[:3]:  # the third ack writes the newest slot
            assert batch is not None
            spool.ack(batch)
        await spool.close()
        assert batches[3] is not None
        spool.ack(batches[3])  # after close: ignored, read again after a restart

    run(first_run())
    cursor = tmp_path / "cursor"
    slots = [cursor.read_bytes()[at : at + 32] for at in (0, 512)]
    newest = max((0, 1), key=lambda i: struct.unpack_from("<Q", slots[i], 4)[0])
    flip(cursor, newest * 512 + 20)

    async def second_run() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert spool.recovery.cursor == "ok"
        assert await drain(spool) == expected([2, 3])
        await spool.close()

    run(second_run())


def test_a_cursor_past_the_end_of_a_truncated_segment_reads_what_follows(
    run: Runner, tmp_path: Path
) -> None:
    spool_settings = SpoolSettings(segment_bytes=150, fsync="never")

    async def first_run() -> None:
        spool = Spool.open(tmp_path, spool_settings)
        for i in range(6):
            await spool.append(record(i))
        batch = await spool.read(2)
        assert batch is not None and batch.entries == expected([0])
        spool.ack(batch)
        await spool.close()

    run(first_run())
    os.truncate(segments(tmp_path)[0], 0)

    async def second_run() -> None:
        spool = Spool.open(tmp_path, spool_settings)
        assert spool.recovery.corrupt_records == 0
        assert spool.recovery.cursor == "ok" and len(segments(tmp_path)) == 1
        assert await drain(spool) == expected(range(3, 6))
        await spool.close()

    run(second_run())


# --------------------------------------------------------------------------- properties

# Three segment files of intact records, written directly (the layout append produces).
TEMPLATE: list[list[list[bytes]]] = [
    [record(10 * s + r, entries=1 + r % 3, size=8 + 5 * r) for r in range(6)] for s in range(3)
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    damage=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(["flip", "truncate"]),
            st.integers(0, 10_000),
            st.integers(1, 255),
        ),
        max_size=6,
    )
)
def test_damaged_segments_never_break_open_or_read_and_intact_records_survive(
    run: Runner, damage: list[tuple[int, str, int, int]]
) -> None:
    files = [bytearray(b"".join(encode_record(r) for r in seg)) for seg in TEMPLATE]
    spans = []  # (file, offset, size, entries) of every record
    for index, seg in enumerate(TEMPLATE):
        offset = 0
        for entries in seg:
            size = len(encode_record(entries))
            spans.append((index, offset, size, entries))
            offset += size
    original = [bytes(data) for data in files]
    for index, kind, position, value in damage:
        data = files[index]
        if not data:
            continue
        if kind == "flip":
            data[position % len(data)] ^= value
        else:
            del data[position % len(data) :]

    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        for index, data in enumerate(files):
            (directory / f"{index + 1:020d}.seg").write_bytes(bytes(data))

        async def scenario() -> list[bytes]:
            spool = Spool.open(directory, NEVER)
            got = await drain(spool)
            await spool.close()
            return got

        got = run(scenario(), timeout_secs=10)

    intact = [
        entries
        for index, offset, size, entries in spans
        if files[index][offset : offset + size] == original[index][offset : offset + size]
    ]
    everything = [e for _, _, _, entries in spans for e in entries]
    assert [e for e in got if e in {x for r in intact for x in r}] == [e for r in intact for e in r]
    assert all(e in everything for e in got)  # nothing but whole original entries


# --------------------------------------------------------------------------- fsync


def test_fsync_always_returns_after_shared_fsyncs_and_keeps_the_data(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> Spool:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="always", segment_bytes=500))
        await asyncio.gather(*(spool.append(record(i)) for i in range(50)))
        assert 1 <= spool.syncs < 50  # concurrent appends share fsyncs
        batch = await spool.read(4)
        assert isinstance(batch, SpoolBatch)
        spool.ack(batch)
        await spool.close()
        return spool

    run(scenario())

    async def reopen() -> None:
        spool = Spool.open(tmp_path, NEVER)
        assert await drain(spool) == expected(range(2, 50))
        await spool.close()

    run(reopen())


def test_fsync_interval_runs_in_the_background_and_stops_at_close(
    run: Runner, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool.open(tmp_path, SpoolSettings(fsync="interval", fsync_interval_secs=0.02))
        await spool.append(record(0))
        assert spool.syncs == 0  # append does not wait for an fsync
        for _ in range(100):
            if spool.syncs:
                break
            await asyncio.sleep(0.01)
        assert spool.syncs >= 1
        await spool.close()
        after_close = spool.syncs
        await asyncio.sleep(0.06)
        assert spool.syncs == after_close
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario())
    again = Spool.open(tmp_path, NEVER)
    assert again.recovery.entries == 2
