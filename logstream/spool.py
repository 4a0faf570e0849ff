"""A disk spool: batches of byte entries appended to segment files, read and acknowledged.

The Elasticsearch sink appends each batch of encoded bulk items to the spool
and a drain task reads them back, sends them, and acknowledges what
Elasticsearch took. What is appended survives a restart and a ``kill -9`` (and,
with ``fsync`` ``always`` or ``interval``, a power loss up to the last fsync);
what is acknowledged is not read again after a restart.

API::

    spool = Spool.open(directory, SpoolSettings(...))   # creates or recovers (sync)
    spool.recovery                                       # RecoveryReport: what open found
    await spool.append([b"...", b"..."])                 # one batch -> one record
    batch = await spool.read(1000, timeout_secs=1.0)    # SpoolBatch | None (timeout)
    spool.ack(batch)                                     # delivered: never read again
    await spool.close()                                  # fsync, cursor, stop the sync task

- ``append`` writes the batch as one framed record (a page-cache write on the
  event loop). With ``fsync: always`` it returns once the record is fsynced
  (concurrent appends share one fsync); ``interval`` fsyncs every
  ``fsync_interval_secs`` from a background task; ``never`` leaves it to the OS
  (survives ``kill -9``, not a power loss). fsyncs run in a worker thread.
  When the segments would exceed ``max_bytes``: ``block`` waits until acks
  free a segment (appends stay in order); ``drop_oldest`` deletes the oldest
  segments, counting their unacknowledged entries in ``dropped_entries`` (a
  batch already read from a dropped segment may still be delivered and acked:
  that ack is accepted and does nothing). A record that could never fit
  (larger than ``max_bytes``) raises ``ValueError``. An empty batch is a no-op.
- ``read`` returns whole records from the read position, from one segment,
  until it has at least ``max_entries`` entries (a larger record comes whole)
  or the segment ends; it waits for data, and returns ``None`` after
  ``timeout_secs`` (``None``: wait for ever) or once the spool is closed.
  Reads run ahead of acks: several batches may be outstanding.
- ``ack`` may be called in any order; the acknowledged position is the end of
  the longest prefix of read batches that are all acknowledged. It is written
  to the cursor file at once (one ``pwrite``; fsynced per the policy) and
  segments wholly acknowledged are deleted.

Facts for metrics and tests, on the spool: ``pending_entries`` and
``pending_bytes`` (appended or recovered, neither acknowledged nor dropped),
``disk_bytes`` (segment file sizes: what ``max_bytes`` caps),
``dropped_entries``, ``corrupt_records`` and ``corrupt_bytes`` (skipped, at
open and while reading), ``blocked_secs`` (appends waiting for room),
``syncs`` (fsync rounds); and ``recovery``, a :class:`RecoveryReport`.

Sizing: ``max_bytes`` should hold several segments. Space comes back a whole
segment at a time, when it is read to its end and every batch from it is
acknowledged; the segment being written is closed early for that when an
append needs the room and everything in it is acknowledged. Open reads each
segment whole to check it, so ``segment_bytes`` bounds that memory.

Not guaranteed: ``close`` is not called on an abrupt shutdown; appends since
the last fsync are then in the OS page cache only (safe from ``kill -9``, not
from a power loss), and the cursor may lag (entries read again).

Files in the directory: ``<20-digit id>.seg`` segments (a new one is started
once the current one reaches ``segment_bytes``, and at every open) and
``cursor``. The cursor file has two 32-byte slots, at offsets 0 and 512 (two
disk sectors), written in turn: magic ``LSC2``, sequence u64, segment id
u64, offset u64, crc32 u32. Open takes the valid slot with the higher
sequence, so a write torn by a power loss leaves the previous cursor. (A
write-then-rename per ack costs about 100 µs, more than the rest of a read
and ack of 100 entries; one ``pwrite`` costs a few µs.)

Record format (little-endian)::

    magic  b"\\xffLS\\xfe"  4 bytes  (0xff/0xfe never occur in UTF-8: a resync anchor)
    crc    u32             crc32 of everything after it (length, count, lens, data)
    length u32             bytes after the 16-byte header (4 * count + sum(lens))
    count  u32             entries, at least 1
    lens   count x u32     the length of each entry
    data   the entries, concatenated

Recovery rules (``Spool.open``; it never raises for bad content, only
``OSError`` for the directory itself):

- the cursor (segment id, offset) says where reading resumes; segments
  older than its segment are deleted. A missing or corrupt cursor means "from
  the oldest segment" (entries may be sent again; the sink's document ids make
  that harmless) and is reported.
- every segment is scanned from there: each record's magic, length (checked
  against the bytes left in the file, never allocated blindly), count and crc.
  A bad stretch is skipped up to the next magic that starts a valid record,
  counted (one corrupt record per stretch, and its bytes) and logged once per
  segment with its file and offset.
- invalid bytes at the end of the newest segment are a torn tail (the writer
  died mid-write): the file is truncated there and the bytes reported. At the
  end of an older segment they count as corrupt.
- segments left with nothing to read are deleted; new appends go to a fresh
  segment. Unacknowledged entries are read again.

The read path checks every record's crc too (cheap next to the copy), so
corruption that appears after open is skipped and counted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
SpoolFull = Literal["block", "drop_oldest"]
CursorState = Literal["ok", "missing", "corrupt", "new"]

MAGIC: Final = b"\xffLS\xfe"
_HEADER: Final = struct.Struct("<4sIII")  # magic, crc, length, count
HEADER_BYTES: Final = _HEADER.size
# Largest record body ever accepted (and so ever allocated when reading).
MAX_RECORD_BYTES: Final = 1 << 30
_CURSOR: Final = struct.Struct("<4sQQQI")  # magic, sequence, segment id, offset, crc
_CURSOR_MAGIC: Final = b"LSC2"
_CURSOR_SLOT_BYTES: Final = 512
_SEGMENT_NAME: Final = re.compile(r"^(\d{20})\.seg$")
_READ_CHUNK_BYTES: Final = 1 << 20
# (sequence, segment id, offset) of a spool without a usable cursor: no segment has id 0,
# so reading starts at the oldest segment.
_NO_CURSOR: Final = (0, 0, 0)


class SpoolClosed(Exception):
    """Raised by ``append`` once ``close`` has begun (also to an append waiting for room)."""


@dataclass(frozen=True)
class SpoolSettings:
    """How big the spool may grow, how often it fsyncs, and what happens when it is full."""

    max_bytes: int = 1 << 30  # cap on segment bytes on disk
    segment_bytes: int = 16 << 20  # a segment is closed and a new one started past this
    # always: fsync before append returns; interval: every fsync_interval_secs;
    # never: leave it to the OS (still survives kill -9, not power loss).
    fsync: FsyncPolicy = "interval"
    fsync_interval_secs: float = 1.0
    when_full: SpoolFull = "block"

    def __post_init__(self) -> None:
        if self.segment_bytes < 1:
            raise ValueError(f"segment_bytes must be at least 1, value: {self.segment_bytes}")
        if self.max_bytes < self.segment_bytes:
            raise ValueError(
                f"max_bytes must be at least segment_bytes ({self.segment_bytes}), "
                f"value: {self.max_bytes}"
            )
        if self.fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, value: {self.fsync!r}")
        if not self.fsync_interval_secs > 0:
            raise ValueError(
                f"fsync_interval_secs must be positive, value: {self.fsync_interval_secs}"
            )
        if self.when_full not in ("block", "drop_oldest"):
            raise ValueError(f"when_full must be block or drop_oldest, value: {self.when_full!r}")


@dataclass(frozen=True)
class RecoveryReport:
    """What ``Spool.open`` found on disk."""

    segments: int = 0  # segments kept, holding unacknowledged records
    records: int = 0  # valid unacknowledged records
    entries: int = 0  # their entries: what will be read again
    torn_tail_bytes: int = 0  # truncated from the end of the newest segment
    corrupt_records: int = 0  # bad stretches skipped (one per stretch)
    corrupt_bytes: int = 0
    cursor: CursorState = "new"  # new: an empty directory, nothing to resume


@dataclass(frozen=True)
class SpoolBatch:
    """Entries returned by one ``read``, to be passed back to ``ack``."""

    entries: list[bytes]
    segment: int  # id of the segment the records are in
    end: int  # offset just past the last record
    nbytes: int  # record bytes (headers included)
    seq: int  # read order


@dataclass
class _Segment:
    id: int
    path: Path
    start: int  # where reading began (the cursor offset, or 0)
    end: int  # just past the last valid record: the reader's bound
    disk: int  # file size
    entries: int = 0  # valid entries in [start, end)
    nbytes: int = 0  # their record bytes
    read_entries: int = 0
    read_bytes: int = 0
    acked_entries: int = 0
    acked_bytes: int = 0
    unacked_batches: int = 0  # read, not yet acknowledged
    closed: bool = True  # no more appends
    wfd: int = -1  # open while the segment is being written (not closed)
    rfd: int | None = None  # opened by the first read
    # Corrupt stretches found by open: offset -> offset of the next valid record.
    skips: dict[int, int] = field(default_factory=dict)


@dataclass
class _Scan:
    records: int = 0
    entries: int = 0
    nbytes: int = 0
    valid_end: int = 0
    skips: dict[int, int] = field(default_factory=dict)
    regions: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes)
    trailing: int = 0  # invalid bytes after the last valid record


def encode_record(entries: Sequence[bytes]) -> bytes:
    """One framed record holding ``entries`` (at least one), as written to a segment."""
    count = len(entries)
    lens = struct.pack(f"<{count}I", *map(len, entries))
    data = b"".join(entries)
    length = len(lens) + len(data)
    if length > MAX_RECORD_BYTES:
        raise ValueError(f"a record may hold at most {MAX_RECORD_BYTES} bytes, value: {length}")
    sizes = struct.pack("<II", length, count)
    crc = zlib.crc32(data, zlib.crc32(lens, zlib.crc32(sizes)))
    return b"".join((MAGIC, struct.pack("<I", crc), sizes, lens, data))


def _frame_at(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(record bytes, entries) of the valid record at ``pos`` within ``buf``, else None."""
    if len(buf) - pos < HEADER_BYTES:
        return None
    magic, crc, length, count = _HEADER.unpack_from(buf, pos)
    end = pos + HEADER_BYTES + length
    if magic != MAGIC or count == 0 or 4 * count > length or end > len(buf):
        return None
    if zlib.crc32(buf[pos + 8 : end]) != crc:
        return None
    lens = struct.unpack_from(f"<{count}I", buf, pos + HEADER_BYTES)
    if sum(lens) != length - 4 * count:
        return None
    return HEADER_BYTES + length, count


def _next_valid(buf: bytes, pos: int) -> int:
    """Offset of the first valid record at or after ``pos``, or ``len(buf)`` if none."""
    while True:
        pos = buf.find(MAGIC, pos)
        if pos == -1:
            return len(buf)
        if _frame_at(buf, pos) is not None:
            return pos
        pos += len(MAGIC)  # a magic cannot begin inside another


def _scan(buf: bytes, start: int) -> _Scan:
    scan = _Scan(valid_end=start)
    pos = start
    limit = len(buf)
    while pos < limit:
        frame = _frame_at(buf, pos)
        if frame is not None:
            pos += frame[0]
            scan.records += 1
            scan.entries += frame[1]
            scan.nbytes += frame[0]
            scan.valid_end = pos
            continue
        resume = _next_valid(buf, pos + 1)
        if resume == limit:
            scan.trailing = limit - pos
            break
        scan.skips[pos] = resume
        scan.regions.append((pos, resume - pos))
        pos = resume
    return scan


def _fsync_files(fds: list[int], close_fds: list[int], paths: list[Path]) -> None:
    """Worker-thread side of a sync: fsync descriptors and files, close retired descriptors."""
    try:
        for fd in fds:
            os.fsync(fd)
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        for fd in close_fds:
            os.close(fd)


def _read_cursor(path: Path, have_segments: bool) -> tuple[CursorState, int, int, int]:
    """(state, sequence, segment id, offset) from the cursor file at ``path``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ("missing" if have_segments else "new"), *_NO_CURSOR
    best: tuple[int, int, int] | None = None
    for at in (0, _CURSOR_SLOT_BYTES):
        slot = raw[at : at + _CURSOR.size]
        if len(slot) < _CURSOR.size:
            continue
        magic, seq, seg, off, crc = _CURSOR.unpack(slot)
        valid = magic == _CURSOR_MAGIC and zlib.crc32(slot[4:28]) == crc
        if valid and (best is None or seq > best[0]):
            best = (seq, seg, off)
    if best is not None:
        return "ok", *best
    log.warning("spool %s: cursor file is corrupt; reading from the oldest segment", path.parent)
    return "corrupt", *_NO_CURSOR


def _recover_segment(
    path: Path, segment_id: int, start: int, newest: bool, report: dict[str, int]
) -> _Segment | None:
    """Scan one segment from ``start`` (see the module doc's recovery rules): the
    segment to keep, or None when nothing in it is left to read (then deleted)."""
    data = path.read_bytes()
    size = len(data)
    start = min(start, size)
    scan = _scan(data, start)
    del data
    regions = list(scan.regions)
    if scan.trailing and newest:
        os.truncate(path, scan.valid_end)
        report["torn"] += scan.trailing
        log.warning(
            "spool %s: truncated a torn tail of %d bytes at offset %d",
            path, scan.trailing, scan.valid_end,
        )  # fmt: skip
        size = scan.valid_end
    elif scan.trailing:
        regions.append((size - scan.trailing, scan.trailing))
    if regions:
        report["corrupt"] += len(regions)
        report["corrupt_bytes"] += sum(n for _, n in regions)
        log.warning(
            "spool %s: skipped %d corrupt stretch(es), %d bytes, the first at offset %d",
            path, len(regions), sum(n for _, n in regions), regions[0][0],
        )  # fmt: skip
    if scan.entries == 0:
        path.unlink()
        return None
    report["records"] += scan.records
    report["entries"] += scan.entries
    return _Segment(
        id=segment_id,
        path=path,
        start=start,
        end=scan.valid_end,
        disk=size,
        entries=scan.entries,
        nbytes=scan.nbytes,
        skips=scan.skips,
    )


class _Syncer:
    """The spool's fsyncs: what was written since the last round (segment data, the
    cursor, the directory), one background task, and the appends waiting for theirs.

    ``fsync: always`` kicks a round per append (concurrent appends share it);
    ``interval`` runs one every ``fsync_interval_secs``. fsyncs run in a worker
    thread. ``active_fd`` gives the write descriptor of the segment being written, if
    one is."""

    def __init__(
        self,
        settings: SpoolSettings,
        directory: Path,
        cursor_fd: int,
        active_fd: Callable[[], int | None],
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.cursor_fd = cursor_fd
        self._active_fd = active_fd
        self.syncs = 0  # fsync rounds done
        # Writes are numbered; waiters of fsync "always" wait for their number.
        self.written = 0
        self._synced = 0
        self._retired: list[int] = []  # write descriptors of rotated segments
        self._cursor_dirty = False
        self._dir_dirty = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # asyncio primitives bind to the running loop on first use, not here.
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()

    def start(self) -> None:
        """Start the task on first use from the event loop (the spool opens synchronously)."""
        if self._task is None and self.settings.fsync != "never":
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"spool-sync {self.directory}"
            )

    def retire(self, fd: int) -> None:
        """A rotated segment's write descriptor: fsynced and closed by the next round."""
        if self.settings.fsync == "never":
            os.close(fd)
        else:
            self._retired.append(fd)

    def cursor_written(self) -> None:
        self._cursor_dirty = True
        if self.settings.fsync == "always":
            self._kick.set()

    def directory_changed(self) -> None:
        self._dir_dirty = True

    async def wait(self, seq: int) -> None:
        """Return once write ``seq`` is fsynced (``fsync: always``)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        self._kick.set()
        await waiter

    async def _loop(self) -> None:
        # fsync always: appends and acks kick a round at once; the interval's rounds then
        # find nothing written, or the directory changes that no append waited for.
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.settings.fsync_interval_secs)
            self._kick.clear()
            if self._closing:
                break
            try:
                await self.sync()
            except OSError:
                log.exception("spool %s: fsync failed", self.directory)

    async def sync(self) -> None:
        """One fsync round of everything written since the last; wakes the appends it covers."""
        async with self._lock:
            target = self.written
            fds: list[int] = []
            if target > self._synced and (active := self._active_fd()) is not None:
                fds.append(active)
            retired, self._retired = self._retired, []
            paths: list[Path] = []
            if self._cursor_dirty:
                self._cursor_dirty = False
                fds.append(self.cursor_fd)
            if self._dir_dirty:
                self._dir_dirty = False
                paths.append(self.directory)
            error: OSError | None = None
            if fds or retired or paths:
                try:
                    await asyncio.to_thread(_fsync_files, fds + retired, retired, paths)
                    self.syncs += 1
                except OSError as exc:
                    error = exc
            self._synced = max(self._synced, target)
            waiters = [w for w in self._waiters if w[0] <= target]
            self._waiters = [w for w in self._waiters if w[0] > target]
            for _, waiter in waiters:
                if waiter.done():
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
            if error is not None:
                raise error

    async def close(self) -> None:
        """Stop the task and run a last round."""
        self._closing = True
        self._kick.set()
        if self._task is not None:
            await self._task
        await self.sync()


class _RecordReader:
    """Reads framed records out of segment files: one cached window of a file, crc checks,
    and resynchronising past corrupt bytes (counted in ``corrupt_records``/``corrupt_bytes``).
    """

    def __init__(self) -> None:
        self.corrupt_records = 0
        self.corrupt_bytes = 0
        # The last bytes read: (segment, offset in its file, bytes). Dropped whenever
        # the reader leaves a segment or one is deleted (a re-read at most).
        self._cache: tuple[_Segment, int, bytes] | None = None

    def forget(self, seg: _Segment) -> None:
        """``seg`` is left or deleted: close its read descriptor, drop the cached bytes."""
        if seg.rfd is not None:
            os.close(seg.rfd)
            seg.rfd = None
        self._cache = None

    @staticmethod
    def _pread(seg: _Segment, size: int, pos: int) -> bytes:
        if seg.rfd is None:
            seg.rfd = os.open(seg.path, os.O_RDONLY)
        return os.pread(seg.rfd, size, pos)

    def _window(self, seg: _Segment, pos: int, need: int) -> tuple[bytes, int] | None:
        """A buffer holding the file's bytes [pos, pos + need) and the index of pos in it."""
        if self._cache is not None:
            cached, at, buf = self._cache
            i = pos - at
            if cached is seg and i >= 0 and i + need <= len(buf):
                return buf, i
        buf = self._pread(seg, min(max(_READ_CHUNK_BYTES, need), seg.end - pos), pos)
        self._cache = (seg, pos, buf)
        if len(buf) < need:
            return None
        return buf, 0

    def records(self, seg: _Segment, pos: int, max_entries: int) -> tuple[list[bytes], int, int]:
        """Entries of the whole records from ``pos`` on, until ``max_entries`` or the
        segment's end: (entries, position after them, their record bytes)."""
        entries: list[bytes] = []
        add = entries.append
        end = seg.end
        nbytes = 0
        while pos < end and len(entries) < max_entries:
            good = False
            win = self._window(seg, pos, HEADER_BYTES) if end - pos >= HEADER_BYTES else None
            if win is not None:
                magic, crc, length, count = _HEADER.unpack_from(win[0], win[1])
                size = HEADER_BYTES + length
                if magic == MAGIC and count and 4 * count <= length and pos + size <= end:
                    win = self._window(seg, pos, size)
                else:
                    win = None
            if win is not None:
                buf, i = win
                if zlib.crc32(memoryview(buf)[i + 8 : i + size]) == crc:
                    lens = struct.unpack_from(f"<{count}I", buf, i + HEADER_BYTES)
                    if sum(lens) == length - 4 * count:
                        o = i + HEADER_BYTES + 4 * count
                        for n in lens:
                            add(buf[o : o + n])
                            o += n
                        pos += size
                        nbytes += size
                        good = True
            if not good:
                pos = self._skip(seg, pos)
        return entries, pos, nbytes

    def _skip(self, seg: _Segment, pos: int) -> int:
        """Where reading resumes after the bad bytes at ``pos`` (counted unless open did)."""
        known = seg.skips.get(pos)
        if known is not None:
            return known
        data = self._pread(seg, seg.end - pos, pos)
        resume = _next_valid(data, 1)
        if resume == len(data):  # no valid record after it (or the file was cut short)
            resume = seg.end - pos
        self.corrupt_records += 1
        self.corrupt_bytes += resume
        log.warning(
            "spool %s: skipped %d corrupt bytes at offset %d while reading", seg.path, resume, pos
        )
        return pos + resume


class Spool:
    """Segment files of framed records, a read position and an acknowledged position.

    One event loop uses it. ``open`` and ``ack`` are synchronous (small file
    operations); ``append``, ``read`` and ``close`` are coroutines.
    """

    def __init__(self, directory: Path, settings: SpoolSettings) -> None:
        self.directory = directory
        self.settings = settings
        # Facts for metrics and tests.
        self.pending_entries = 0  # appended (or recovered), not yet acknowledged nor dropped
        self.pending_bytes = 0
        self.disk_bytes = 0  # segment file sizes
        self.dropped_entries = 0  # deleted unacknowledged by drop_oldest
        self.blocked_secs = 0.0  # appends waiting for room (when_full: block)

        self._segments: dict[int, _Segment] = {}  # oldest first
        self._active: _Segment | None = None
        self._reader = _RecordReader()
        self._read_seq = 0
        self._outstanding: dict[int, SpoolBatch] = {}  # read, not yet applied; by seq
        self._acked: dict[int, SpoolBatch] = {}  # acked out of order, waiting for the prefix
        self._closing = False
        self._closed = False
        self._max_record = settings.max_bytes
        # asyncio primitives bind to the running loop on first use, not here.
        self._data = asyncio.Event()  # set by append: wakes a waiting read
        self._room = asyncio.Event()  # set when a segment is deleted: wakes a blocked append
        self._append_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        # Set by _recover from what is on disk:
        self.recovery: RecoveryReport
        self._next_id: int  # of the next segment
        self._read_seg: int  # read position
        self._read_off: int
        self._cursor_seq: int  # acknowledged position, as the cursor file holds it
        self._cursor_seg: int
        self._cursor_off: int
        self._syncer: _Syncer
        self._recover()

    @property
    def corrupt_records(self) -> int:
        """Bad stretches skipped, at open and while reading."""
        return self.recovery.corrupt_records + self._reader.corrupt_records

    @property
    def corrupt_bytes(self) -> int:
        return self.recovery.corrupt_bytes + self._reader.corrupt_bytes

    @property
    def syncs(self) -> int:
        """fsync rounds done."""
        return self._syncer.syncs

    # ------------------------------------------------------------------ open / recovery

    @classmethod
    def open(cls, directory: Path, settings: SpoolSettings) -> Spool:
        """Create the spool in ``directory`` or recover what is there (see the module doc).

        Never raises for bad content; raises ``OSError`` if the directory or its
        files cannot be created, read, truncated or deleted.
        """
        return cls(directory, settings)

    @property
    def _cursor_path(self) -> Path:
        return self.directory / "cursor"

    def _segment_path(self, segment_id: int) -> Path:
        return self.directory / f"{segment_id:020d}.seg"

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ids = sorted(
            int(m.group(1))
            for m in map(_SEGMENT_NAME.match, os.listdir(self.directory))
            if m is not None
        )
        state, self._cursor_seq, cursor_seg, cursor_off = _read_cursor(self._cursor_path, bool(ids))
        if state == "ok":
            for old in [i for i in ids if i < cursor_seg]:
                self._segment_path(old).unlink()  # listed just now; one process owns the directory
            ids = [i for i in ids if i >= cursor_seg]
        report = {"records": 0, "entries": 0, "torn": 0, "corrupt": 0, "corrupt_bytes": 0}
        for segment_id in ids:
            start = cursor_off if state == "ok" and segment_id == cursor_seg else 0
            path = self._segment_path(segment_id)
            seg = _recover_segment(path, segment_id, start, segment_id == ids[-1], report)
            if seg is not None:
                self._segments[segment_id] = seg
                self.disk_bytes += seg.disk
                self.pending_entries += seg.entries
                self.pending_bytes += seg.nbytes
        self._next_id = max([*ids, cursor_seg]) + 1
        self._cursor_seg, self._cursor_off = cursor_seg, cursor_off
        first = next(iter(self._segments.values()), None)
        if first is not None:
            self._read_seg, self._read_off = first.id, first.start
        else:
            self._read_seg, self._read_off = self._next_id, 0
        self._syncer = _Syncer(
            self.settings,
            self.directory,
            os.open(self._cursor_path, os.O_RDWR | os.O_CREAT, 0o644),
            lambda: self._active.wfd if self._active is not None else None,
        )
        if state != "ok":
            self._write_cursor()  # so a later open tells a lost cursor from a new spool
        self.recovery = RecoveryReport(
            segments=len(self._segments),
            records=report["records"],
            entries=report["entries"],
            torn_tail_bytes=report["torn"],
            corrupt_records=report["corrupt"],
            corrupt_bytes=report["corrupt_bytes"],
            cursor=state,
        )

    # ------------------------------------------------------------------ loop-side state

    def _started(self) -> None:
        """Start the sync task on first use from the event loop (``open`` is synchronous)."""
        self._syncer.start()

    # ------------------------------------------------------------------ append

    async def append(self, entries: Sequence[bytes]) -> None:
        """Write ``entries`` as one record (see the module doc for full, fsync and errors)."""
        if self._closing:
            raise SpoolClosed(f"spool {self.directory} is closed")
        if not entries:
            return
        self._started()
        record = encode_record(entries)
        if len(record) > self._max_record:
            raise ValueError(
                f"a record of {len(record)} bytes can never fit in max_bytes "
                f"({self.settings.max_bytes})"
            )
        async with self._append_lock:
            await self._make_room(len(record))
            if self._closing:  # close began while this append waited
                raise SpoolClosed(f"spool {self.directory} is closed")
            self._write(record, len(entries))
            seq = self._syncer.written
        if self.settings.fsync == "always":
            await self._syncer.wait(seq)

    def _write(self, record: bytes, count: int) -> None:
        seg = self._active
        if seg is None:
            seg = self._new_segment()
        view = memoryview(record)
        written = 0
        try:
            while written < len(record):
                written += os.write(seg.wfd, view[written:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(seg.wfd, seg.end)
            raise
        size = len(record)
        seg.end += size
        seg.disk += size
        seg.entries += count
        seg.nbytes += size
        self.disk_bytes += size
        self.pending_entries += count
        self.pending_bytes += size
        self._syncer.written += 1
        self._data.set()
        if seg.end >= self.settings.segment_bytes:
            self._rotate()

    def _new_segment(self) -> _Segment:
        segment_id = self._next_id
        self._next_id += 1
        path = self._segment_path(segment_id)
        wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        seg = _Segment(id=segment_id, path=path, start=0, end=0, disk=0, closed=False, wfd=wfd)
        self._segments[segment_id] = seg
        self._active = seg
        self._syncer.directory_changed()
        return seg

    def _rotate(self) -> None:
        seg = self._active
        if seg is None:
            return
        self._active = None
        seg.closed = True
        # The sync task fsyncs it and closes it; it may be fsyncing it right now.
        self._syncer.retire(seg.wfd)
        self._release()

    async def _make_room(self, size: int) -> None:
        limit = self.settings.max_bytes
        while self.disk_bytes + size > limit:
            active = self._active
            if active is not None and active.end > 0 and self._fully_acked(active):
                self._rotate()  # deletes it
                continue
            if self.settings.when_full == "drop_oldest":
                self._drop_oldest()
                continue
            if self._closing:
                raise SpoolClosed(f"spool {self.directory} is closed")
            self._room.clear()
            began = time.monotonic()
            try:
                await self._room.wait()
            finally:
                self.blocked_secs += time.monotonic() - began

    def _drop_oldest(self) -> None:
        seg = next(iter(self._segments.values()))
        if seg is self._active:
            self._rotate()  # the caller checks the room again and drops it next time
            return
        lost = seg.entries - seg.acked_entries
        self.dropped_entries += lost
        self.pending_entries -= lost
        self.pending_bytes -= seg.nbytes - seg.acked_bytes
        log.warning(
            "spool %s is full (max_bytes %d): dropped segment %s with %d unacknowledged entries",
            self.directory, self.settings.max_bytes, seg.path.name, lost,
        )  # fmt: skip
        self._delete(seg)

    # ------------------------------------------------------------------ read

    async def read(self, max_entries: int, timeout_secs: float | None = None) -> SpoolBatch | None:
        """The next records, at least ``max_entries`` entries if the segment has them."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, value: {max_entries}")
        if self._closed:
            return None
        self._started()
        loop = asyncio.get_running_loop()
        deadline = None if timeout_secs is None else loop.time() + timeout_secs
        async with self._read_lock:
            while True:
                batch = self._read_now(max_entries)
                if batch is not None:
                    return batch
                if self._closing:
                    return None
                self._data.clear()
                if deadline is None:
                    await self._data.wait()
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._data.wait(), remaining)
                except TimeoutError:
                    return None

    def _reader_segment(self) -> _Segment | None:
        """The segment the read position is in, moving past finished segments."""
        while True:
            seg = self._segments.get(self._read_seg)
            if seg is None:
                later = [i for i in self._segments if i > self._read_seg]
                if not later:
                    return None
                seg = self._segments[later[0]]
                self._read_seg, self._read_off = seg.id, seg.start
            if self._read_off < seg.end:
                return seg
            if not seg.closed:
                return None
            later = [i for i in self._segments if i > seg.id]
            if not later:
                return None
            self._leave(seg)
            nxt = self._segments[later[0]]
            self._read_seg, self._read_off = nxt.id, nxt.start

    def _leave(self, seg: _Segment) -> None:
        """The reader is done with ``seg``: close its descriptor, forget lost entries."""
        self._reader.forget(seg)
        lost = seg.entries - seg.read_entries
        if lost:
            # Records that turned corrupt after they were counted: they will never be acked.
            self.pending_entries -= lost
            self.pending_bytes -= seg.nbytes - seg.read_bytes
            seg.entries, seg.nbytes = seg.read_entries, seg.read_bytes
        self._release()

    def _read_now(self, max_entries: int) -> SpoolBatch | None:
        while True:
            seg = self._reader_segment()
            if seg is None:
                return None
            entries, pos, nbytes = self._reader.records(seg, self._read_off, max_entries)
            self._read_off = pos
            if entries:
                seg.read_entries += len(entries)
                seg.read_bytes += nbytes
                seg.unacked_batches += 1
                self._read_seq += 1
                batch = SpoolBatch(entries, seg.id, pos, nbytes, self._read_seq)
                self._outstanding[self._read_seq] = batch
                return batch

    # ------------------------------------------------------------------ ack

    def ack(self, batch: SpoolBatch) -> None:
        """Declare ``batch`` delivered, in any order (see the module doc).

        ``ValueError`` for a batch that is not outstanding here (acked twice,
        from another spool). After ``close`` it is ignored and logged: the
        entries are read again after a restart.
        """
        if self._closed:
            log.warning(
                "spool %s: ack after close ignored; its %d entries will be read again after a "
                "restart",
                self.directory, len(batch.entries),
            )  # fmt: skip
            return
        if self._outstanding.get(batch.seq) is not batch or batch.seq in self._acked:
            raise ValueError(f"batch {batch.seq} is not an unacknowledged batch of this spool")
        self._acked[batch.seq] = batch
        moved = False
        for seq in list(self._outstanding):
            done = self._acked.pop(seq, None)
            if done is None:
                break
            del self._outstanding[seq]
            self._apply_ack(done)
            moved = True
        if moved:
            self._write_cursor()
            self._release()

    def _apply_ack(self, batch: SpoolBatch) -> None:
        if (batch.segment, batch.end) > (self._cursor_seg, self._cursor_off):
            self._cursor_seg, self._cursor_off = batch.segment, batch.end
        seg = self._segments.get(batch.segment)
        if seg is None:  # dropped (drop_oldest): its entries were counted then
            return
        count = len(batch.entries)
        seg.acked_entries += count
        seg.acked_bytes += batch.nbytes
        seg.unacked_batches -= 1
        self.pending_entries -= count
        self.pending_bytes -= batch.nbytes

    def _write_cursor(self) -> None:
        self._cursor_seq += 1
        body = struct.pack("<QQQ", self._cursor_seq, self._cursor_seg, self._cursor_off)
        raw = _CURSOR_MAGIC + body + struct.pack("<I", zlib.crc32(body))
        os.pwrite(self._syncer.cursor_fd, raw, (self._cursor_seq % 2) * _CURSOR_SLOT_BYTES)
        self._syncer.cursor_written()

    @staticmethod
    def _fully_acked(seg: _Segment) -> bool:
        return seg.acked_entries == seg.entries and seg.unacked_batches == 0

    def _release(self) -> None:
        """Delete the oldest closed segments that are read to the end and fully acknowledged."""
        for seg in list(self._segments.values()):
            finished = seg.closed and self._fully_acked(seg)
            if not finished or (seg.id == self._read_seg and self._read_off < seg.end):
                return
            self._delete(seg)

    def _delete(self, seg: _Segment) -> None:
        del self._segments[seg.id]
        self._reader.forget(seg)
        seg.path.unlink(missing_ok=True)
        self.disk_bytes -= seg.disk
        self._syncer.directory_changed()
        self._room.set()

    # ------------------------------------------------------------------ fsync and close

    async def close(self) -> None:
        """Stop the sync task, fsync everything, persist the cursor, close the files.

        Waiting reads return ``None``; appends waiting for room raise ``SpoolClosed``.
        """
        if self._closing:
            return
        self._closing = True
        self._room.set()
        self._data.set()
        try:
            await self._syncer.close()
        finally:
            if self._active is not None:
                os.close(self._active.wfd)
                self._active.closed = True
                self._active = None
                self._release()  # a wholly acknowledged last segment goes too
            for seg in self._segments.values():
                self._reader.forget(seg)
            os.close(self._syncer.cursor_fd)
            self._closed = True
