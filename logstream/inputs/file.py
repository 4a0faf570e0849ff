"""The ``file`` input: tail files on disk (Logstash's ``file`` input, Filebeat's ``log`` input).

::

    inputs:
      - type: file
        paths: ["/var/log/*.log", "~/ansible.log"]   # globs; ** for any depth
        exclude: ["*.gz"]               # globs on the full path or the file name
        start_position: end             # beginning | end: files found at start with no checkpoint
        discover_interval_secs: 1.0     # how often the globs are expanded again
        poll_interval_secs: 0.25        # how often idle files are checked for new data
        read_chunk_bytes: 262144        # bytes per read; one read is one batch
        max_line_bytes: 1048576         # longer lines are cut and tagged _linetoolong
        eof_flush_secs: 5.0             # a last line without newline is delivered after this
        close_inactive_secs: 300        # a file idle this long is closed (reopened when it grows)
        max_open_files: 1024
        checkpoint_file: null           # default: <state_dir>/file/<unit name>.json
        checkpoint_interval_secs: 1.0
        multiline: {pattern: '^\\s', negate: false, what: previous}

Each line becomes one event::

    {"@timestamp": <time read>, "@version": "1", "message": <line, no newline>,
     "host": <this machine's name>, "path": "/var/log/app.log",
     "log": {"file": {"path": "/var/log/app.log"}, "offset": <byte offset of the line>}}

``path`` is Logstash's legacy field: the ``parse`` and ``multiline`` filters'
default ``stream_key: [host, path, type]`` keeps each file its own stream.
Empty lines are skipped; a trailing ``\\r`` is dropped; invalid UTF-8 is
replaced and tagged ``_utf8error``; an over-long line is cut (the tcp input's
:func:`~logstream.inputs.tcp.too_long_event`) and the rest of it skipped.

How a read travels (one task for the whole input; reads are ``os.pread`` of
regular files, which the page cache answers without blocking the loop for
long)::

    pread(read_chunk_bytes) -> split(b"\\n") -> events -> [multiline] -> ingest.push(batch)
        -> note (ingest.accepted, offsets reached) -> call_when_safe -> checkpoint entry

**Checkpoints.** Every file is known by ``(device, inode)`` and a fingerprint
(a hash of its first bytes, up to 256) that tells a reused inode from the
file that had it. A file's checkpoint offset advances only when the pipeline
says every event read before it is safe (``ingest.call_when_safe``), so a
restart neither loses nor repeats lines; the file is written (temp file and
``os.replace``) at most every ``checkpoint_interval_secs`` and on stop, and
at once for confirmations that arrive after stop (the pipeline drains after
its inputs stop). A line cut at ``max_line_bytes`` is remembered as being
skipped, and a multiline record still held back keeps the offset at its
first line (estimated from the pattern: at worst a group cut at its bounds
is read again after a crash, never lost).

**Rotation.** A file renamed away (its inode no longer at its path) is read
to its end and closed once idle for ``eof_flush_secs``; the new file at the
path is read from its start. A file whose size falls below the read offset
(copytruncate), or whose first bytes changed, is read again from 0. A
deleted file is read to its end and closed. Each is counted in
``logstream_file_changes_total{reason}`` (``file_rotated``,
``file_truncated``, ``file_disappeared``, ``file_unreadable`` for paths that
cannot be read: permission denied, a directory; logged once per path).
``start_position`` applies only to files found by the first discovery:
files appearing later are new and read from their start.

**Flow control.** While ingest is full the input reads nothing; it waits for
``ingest.call_when_drained``. A line without its newline at the end of a
file waits for the rest (``eof_flush_secs``, then it is delivered alone and
counted as ``truncated_line``); at stop it stays unread, for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import hashlib
import logging
import os
import re
import socket
import stat
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from logstream.buffer import BatchBuffer, BufferClosed
from logstream.clock import Clock
from logstream.event import TAG_UTF8_ERROR, Batch, Event, failed_event, now_timestamp
from logstream.filters.multiline import MultilineFilter, MultilineFilterConfig
from logstream.inputs.file_checkpoint import FINGERPRINT_BYTES, CheckpointError, Checkpoints
from logstream.inputs.tcp import MIB, too_long_event
from logstream.metrics import FileChange, Registry, UnitMetrics
from logstream.units import BuildContext, Input, InputConfig
from logstream.workers.layout import owner

log = logging.getLogger(__name__)

# Chunks read from one file before the others get their turn.
_READS_PER_TURN: Final = 4
# How long stop() lets the reading task finish the batch it is on.
_STOP_TIMEOUT_SECS: Final = 5.0


class FileMultilineConfig(BaseModel):
    """Logstash's multiline codec settings, applied per file (see the multiline filter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(description="Regex searched in each line.")
    negate: bool = Field(default=False, description="Act on the lines that do not match.")
    what: Literal["previous", "next"] = Field(
        default="previous",
        description="previous: the line belongs to the event before; next: to the one after.",
    )
    max_lines: int = Field(default=500, ge=1)
    max_bytes: int = Field(default=MIB, ge=1)
    timeout_secs: float = Field(
        default=1.0, gt=0, description="A record held this long without a new line is let go."
    )

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except (re.error, OverflowError, RecursionError) as error:
            raise ValueError(f"pattern {value!r} is not a valid regex: {error}") from None
        return value


class FileInputConfig(InputConfig):
    """Tail files matching glob patterns, with checkpoints that survive restarts."""

    type: Literal["file"]
    paths: list[str] = Field(min_length=1, description="Glob patterns of the files to read.")
    exclude: list[str] = Field(
        default_factory=list, description="Globs matched against the full path or the name."
    )
    start_position: Literal["beginning", "end"] = Field(
        default="end",
        description="Where files found at start that have no checkpoint are read from.",
    )
    discover_interval_secs: float = Field(default=1.0, gt=0)
    poll_interval_secs: float = Field(default=0.25, gt=0)
    read_chunk_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * MIB)
    max_line_bytes: int = Field(
        default=MIB, ge=1, description="Longer lines are cut to this size and tagged _linetoolong."
    )
    eof_flush_secs: float = Field(
        default=5.0,
        gt=0,
        description="A last line without newline is delivered after this long unchanged.",
    )
    close_inactive_secs: float = Field(
        default=300.0, gt=0, description="Close a file that has not grown for this long."
    )
    max_open_files: int = Field(default=1024, ge=1)
    checkpoint_file: Path | None = Field(
        default=None, description="Default: <state_dir>/file/<unit name>.json."
    )
    checkpoint_interval_secs: float = Field(default=1.0, gt=0)
    multiline: FileMultilineConfig | None = None

    @field_validator("paths", "exclude")
    @classmethod
    def _no_empty_patterns(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            if not pattern.strip():
                raise ValueError(f"[{index}]: a pattern must not be empty, value: {pattern!r}")
        return value

    def build(self, name: str, ctx: BuildContext) -> FileInput:
        return FileInput(self, name, ctx)


def fingerprint(data: bytes) -> str:
    """The fingerprint of a file's first bytes (``data``, at most ``FINGERPRINT_BYTES``)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class _Tail:
    """One open file: where reading is, and the unfinished line."""

    __slots__ = (
        "detached",
        "entry",
        "fd",
        "fp",
        "fp_bytes",
        "generation",
        "grew_at",
        "held_from",
        "key",
        "offset",
        "partial",
        "path",
        "skip",
    )

    def __init__(
        self,
        path: str,
        fd: int,
        key: str,
        entry: dict[str, Any],
        now: float,
        offset: int,
        skip: bool,
    ) -> None:
        self.path = path
        self.fd = fd
        self.key = key
        # The checkpoint entry of this file; replaced (not updated) when the key is reused.
        self.entry = entry
        self.offset = offset  # the next byte to read
        self.skip = skip  # skipping the rest of a line cut at max_line_bytes
        self.partial = b""  # the unfinished last line (it starts at offset - len(partial))
        self.fp: str = entry["fingerprint"]
        self.fp_bytes: int = entry["fingerprint_bytes"]
        # Bumped by a truncation: confirmations of reads before it are stale.
        self.generation = 0
        self.grew_at = now  # when the last bytes were read
        # Why the path no longer names this file (read to the end, then closed).
        self.detached: FileChange | None = None
        # Offset of the first line of a multiline record held back (multiline only).
        self.held_from: int | None = None

    def refresh_fingerprint(self) -> bool:
        """Fingerprint more of the file's head if it grew; whether the entry changed
        (the file's identity, not a claim about delivery: recorded at once)."""
        try:
            head = os.pread(self.fd, FINGERPRINT_BYTES, 0)
        except OSError:
            return False
        if len(head) <= self.fp_bytes:
            return False
        self.fp, self.fp_bytes = fingerprint(head), len(head)
        self.entry.update(fingerprint=self.fp, fingerprint_bytes=self.fp_bytes)
        return True

    def fingerprint_holds(self) -> bool:
        """Whether the file's head is still the one fingerprinted."""
        try:
            head = os.pread(self.fd, self.fp_bytes, 0)
        except OSError:
            return True  # the next read meets the error and closes the file
        return len(head) == self.fp_bytes and fingerprint(head) == self.fp

    def position(self) -> tuple[int, bool]:
        """Where a restart resumes: ``(offset, skipping the rest of a cut line)``."""
        if self.held_from is not None:
            return self.held_from, False
        if self.skip:
            return self.offset, True
        return self.offset - len(self.partial), False


class LineDecoder:
    """Lines of a file to events (see the module doc), and where a multiline record
    held back starts."""

    def __init__(self, host: str, limit: int, metrics: UnitMetrics) -> None:
        self.host = host
        self.limit = limit
        self.metrics = metrics
        # The multiline pattern (None without multiline) and its ``what``.
        self.joins: Callable[[str], bool] | None = None
        self.previous = True

    def lines(self, tail: _Tail, data: bytes) -> Batch:
        """The events of the complete lines in ``data`` (after what ``tail`` held)."""
        pieces = data.split(b"\n")
        rest = pieces.pop()
        start = tail.offset - len(data) - len(tail.partial)  # where pieces[0] starts
        batch: Batch = []
        if pieces:
            if tail.skip:
                start += len(pieces[0]) + 1  # the end of a line already delivered cut
                del pieces[0]
                tail.skip = False
            elif tail.partial:
                pieces[0] = tail.partial + pieces[0]
                tail.partial = b""
            timestamp = now_timestamp()
            for line in pieces:
                self.line(tail, line, start, timestamp, batch)
                start += len(line) + 1
        elif tail.skip:
            return batch
        if rest:
            tail.partial += rest
            if len(tail.partial) > self.limit:
                self.line(tail, tail.partial, start, now_timestamp(), batch)
                tail.partial = b""
                tail.skip = True
        return batch

    def line(self, tail: _Tail, line: bytes, start: int, timestamp: str, batch: Batch) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return
        event: Event
        if len(line) > self.limit:
            event = too_long_event(line, self.limit, self.metrics)
        else:
            try:
                event = {"@timestamp": timestamp, "@version": "1", "message": line.decode()}
            except UnicodeDecodeError:
                self.metrics.decode_issue("invalid_utf8")
                event = failed_event(line.decode("utf-8", "replace"), TAG_UTF8_ERROR)
        path = tail.path
        event["host"] = self.host
        event["path"] = path
        event["log"] = {"file": {"path": path}, "offset": start}
        joins = self.joins
        if joins is not None:
            # Where the record held back by the multiline filter starts (see module doc).
            if self.previous:
                if tail.held_from is None or not joins(event["message"]):
                    tail.held_from = start
            elif tail.held_from is None:
                if joins(event["message"]):
                    tail.held_from = start
            elif not joins(event["message"]):
                tail.held_from = None
        batch.append(event)


class FileMultiline:
    """Logstash's multiline codec per file: the multiline filter's own logic, one
    stream per file (the ``path`` field). Its counters go to a private registry;
    what it merges is counted on the input (``merged``). Each file remembers where
    a record held back starts (``_Tail.held_from``, estimated by the decoder) until
    the filter lets the record go."""

    def __init__(
        self,
        settings: FileMultilineConfig,
        name: str,
        ctx: BuildContext,
        max_streams: int,
        metrics: UnitMetrics,
        decoder: LineDecoder,
    ) -> None:
        filter_config = MultilineFilterConfig(
            type="multiline",
            pattern=settings.pattern,
            negate=settings.negate,
            what=settings.what,
            stream_key=["path"],
            max_lines=settings.max_lines,
            max_bytes=settings.max_bytes,
            timeout_secs=settings.timeout_secs,
            max_streams=max_streams,
        )
        private = BuildContext(registry=Registry(), clock=ctx.clock, state_dir=ctx.state_dir)
        self.filter: MultilineFilter = filter_config.build(name, private)
        self.metrics = metrics
        search, negate = re.compile(settings.pattern).search, settings.negate
        decoder.joins = lambda line: (search(line) is not None) is not negate
        decoder.previous = settings.what == "previous"

    def process(self, batch: Batch, path: str, tails: Iterable[_Tail]) -> Batch:
        """The events of ``batch`` (read from ``path``) merged into records."""
        batch = self.filter.process(batch)
        self._count_merged()
        self._released([event for event in batch if event.get("path") != path], tails)
        return batch

    def flush(self, tails: Iterable[_Tail]) -> Batch:
        """Every record held back (at stop)."""
        held: Batch = self.filter.flush()
        self._count_merged()
        self._released(held, tails)
        return held

    def tick(self, now: float, tails: Iterable[_Tail]) -> Batch:
        """The records held past their timeout."""
        due: Batch = self.filter.tick(now)
        if due:
            self._released(due, tails)
        return due

    def _count_merged(self) -> None:
        merged = self.filter.metrics.dropped.pop("merged", 0)
        if merged:
            self.metrics.drop(merged, "merged")

    @staticmethod
    def _released(events: Batch, tails: Iterable[_Tail]) -> None:
        """Records the filter let go: their files hold nothing back any more."""
        paths = {event.get("path") for event in events}
        if paths:
            for tail in tails:
                if tail.path in paths:
                    tail.held_from = None


class FileInput(Input):
    """One task that discovers, reads and checkpoints every matching file."""

    def __init__(self, config: FileInputConfig, name: str, ctx: BuildContext) -> None:
        super().__init__(name, ctx.registry.unit(name, "input"))
        self.config = config
        self._clock: Clock = ctx.clock
        self._store = Checkpoints(checkpoint_path(config, name, ctx.state_dir))
        # With pipeline.workers above 1, this worker tails only the files it owns.
        self._worker, self._workers = ctx.worker, ctx.workers
        self._decoder = LineDecoder(socket.gethostname(), config.max_line_bytes, self.metrics)
        self._tails: dict[str, _Tail] = {}  # by "device:inode"
        self._entries = self._store.entries  # the checkpoint, by "device:inode"
        self._warned: set[tuple[str, str]] = set()
        self._ingest: BatchBuffer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._stopped = False
        # After stop: the position of the last event pushed, and when the checkpoint
        # may next be written (confirmations then come from the pipeline's drain).
        self._final_position = 0
        self._next_save = 0.0
        # Files closed while open: how far they were read ((offset, skip)), so that
        # reopening one does not read again what was delivered but is not yet safe.
        self._read_upto: dict[str, tuple[int, bool]] = {}
        self._multiline: FileMultiline | None = None
        if config.multiline is not None:
            self._multiline = FileMultiline(
                config.multiline,
                f"{name}.multiline",
                ctx,
                max(config.max_open_files * 2, 16),
                self.metrics,
                self._decoder,
            )

    @property
    def checkpoint_path(self) -> Path:
        return self._store.path

    def _mine(self, key: str) -> bool:
        """Whether this worker tails the file ``key`` (always, with one worker)."""
        return self._workers == 1 or owner(key, self._workers) == self._worker

    @property
    def open_files(self) -> list[str]:
        """Paths of the files open now (for tests and logs)."""
        return [tail.path for tail in self._tails.values()]

    # ----------------------------------------------------------------- lifecycle

    async def start(self, ingest: BatchBuffer) -> None:
        self._ingest = ingest
        self._wake = asyncio.Event()
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        self._load_checkpoint()
        self._discover(initial=True)
        self._task = asyncio.create_task(self._run(), name=f"file input {self.name}")
        log.info(
            "file input %s: %d file(s) open, checkpoints in %s",
            self.name,
            len(self._tails),
            self.checkpoint_path,
        )

    async def stop(self) -> None:
        if self._ingest is None:
            return  # never started: nothing open, nothing to record
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT_SECS)
                except TimeoutError:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._multiline is not None and self._ingest is not None:
                self._push(self._multiline.flush(self._tails.values()))
                for tail in self._tails.values():
                    self._note(tail)
            for tail in list(self._tails.values()):
                self._close(tail)
        except Exception:
            log.exception("file input %s: error while stopping", self.name)
        self._stopped = True  # confirmations from now on are written by _safe
        if self._ingest is not None:
            self._final_position = self._ingest.accepted
        self._save()
        self._next_save = self._clock.monotonic() + self.config.checkpoint_interval_secs

    # ----------------------------------------------------------------- the task

    async def _run(self) -> None:
        ingest, wake, clock = self._ingest, self._wake, self._clock
        if ingest is None or wake is None:  # pragma: no cover - start() sets both
            return
        config = self.config
        next_discover = clock.monotonic() + config.discover_interval_secs
        next_save = clock.monotonic() + config.checkpoint_interval_secs
        while not self._stopping:
            busy = False
            try:
                for tail in list(self._tails.values()):
                    if ingest.full:
                        await self._room(ingest, wake)
                    if self._stopping:
                        break
                    if self._tails.get(tail.key) is tail:  # not closed meanwhile
                        busy = self._turn(tail) or busy
                now = clock.monotonic()
                if self._multiline is not None:
                    self._tick(self._multiline, now)
                if now >= next_discover:
                    next_discover = now + config.discover_interval_secs
                    self._discover(initial=False)
                if now >= next_save:
                    next_save = now + config.checkpoint_interval_secs
                    if self._store.dirty:
                        self._save()
            except Exception:
                self.metrics.errors += 1
                log.exception("file input %s: unexpected error; going on", self.name)
            if not busy and not self._stopping:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), config.poll_interval_secs)

    async def _room(self, ingest: BatchBuffer, wake: asyncio.Event) -> None:
        """Wait until ingest drains below half (or stop)."""
        wake.clear()
        ingest.call_when_drained(wake.set)
        await wake.wait()

    def _turn(self, tail: _Tail) -> bool:
        """Read what ``tail`` has (a few chunks at most); ``True`` if anything was read."""
        ingest = self._ingest
        for turn in range(_READS_PER_TURN):
            try:
                data = os.pread(tail.fd, self.config.read_chunk_bytes, tail.offset)
            except OSError as error:
                self._unreadable(tail.path, error)
                self._close(tail)
                return turn > 0
            if not data:
                self._at_end(tail)
                return turn > 0
            tail.grew_at = self._clock.monotonic()
            tail.offset += len(data)
            self.metrics.bytes_in += len(data)
            if tail.fp_bytes < FINGERPRINT_BYTES and tail.refresh_fingerprint():
                self._store.dirty = True
            self._deliver(tail, self._decoder.lines(tail, data))
            if ingest is None or ingest.full:
                break
        return True

    # ----------------------------------------------------------------- delivery, checkpoints

    def _deliver(self, tail: _Tail, batch: Batch) -> None:
        """Push ``batch`` (read from ``tail``) and note how far ``tail`` got with it."""
        if self._multiline is not None and batch:
            batch = self._multiline.process(batch, tail.path, self._tails.values())
        self._push(batch)
        self._note(tail)

    def _push(self, batch: Batch) -> None:
        ingest = self._ingest
        if not batch or ingest is None:
            return
        try:
            ingest.push(batch)
        except BufferClosed:
            self.metrics.drop(len(batch), "shutdown")
            return
        self.metrics.events_in += len(batch)

    def _note(self, tail: _Tail) -> None:
        """Record ``tail``'s position in its checkpoint entry once what was pushed is safe."""
        ingest = self._ingest
        if ingest is None:
            return
        offset, skip = tail.position()
        ingest.call_when_safe(
            ingest.accepted, partial(self._safe, tail, tail.generation, offset, skip)
        )

    def _safe(self, tail: _Tail, generation: int, offset: int, skip: bool) -> None:
        entry = tail.entry
        if generation != tail.generation or self._entries.get(tail.key) is not entry:
            return  # truncated since, or the file was forgotten
        if entry["offset"] == offset and entry["skip"] == skip:
            return
        entry.update(offset=offset, skip=skip)
        self._store.dirty = True
        if self._stopped and self._ingest is not None:
            # The last confirmation is written at once, others at most every interval.
            now = self._clock.monotonic()
            if self._ingest.safe >= self._final_position or now >= self._next_save:
                self._save()
                self._next_save = now + self.config.checkpoint_interval_secs

    def _tick(self, multiline: FileMultiline, now: float) -> None:
        """Push the records the multiline filter let go by timeout; note their files."""
        due = multiline.tick(now, self._tails.values())
        if due:
            self._push(due)
            paths = {event.get("path") for event in due}
            for tail in self._tails.values():
                if tail.path in paths:
                    self._note(tail)

    def _load_checkpoint(self) -> None:
        try:
            self._store.load()
        except CheckpointError as error:
            self.metrics.errors += 1
            log.error(
                "file input %s: checkpoint %s; files without an entry are read from start_position",
                self.name,
                error,
            )
        for key in [key for key in self._entries if not self._mine(key)]:
            del self._entries[key]  # another worker's file (left by another layout)

    def _save(self) -> None:
        """Write the checkpoint file atomically (temp file, fsync, rename)."""
        try:
            self._store.save()
        except OSError as error:
            self.metrics.errors += 1
            log.error(
                "file input %s: cannot write checkpoint %s: %s",
                self.name,
                self._store.path,
                error,
            )

    # ----------------------------------------------------------------- files

    def _discover(self, *, initial: bool) -> None:
        """Open the matching files not open yet; check the open ones; forget removed files."""
        seen: set[str] = set()
        for path in matching_paths(self.config.paths, self.config.exclude):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as error:
                self._unreadable(path, error)
                continue
            if not stat.S_ISREG(st.st_mode):
                self._unreadable(path, IsADirectoryError(f"not a regular file: {path}"))
                continue
            key = f"{st.st_dev}:{st.st_ino}"
            seen.add(key)
            if key not in self._tails and self._mine(key):
                self._open(path, st, initial=initial)
        for tail in list(self._tails.values()):
            if tail.detached is None and tail.fp_bytes and not tail.fingerprint_holds():
                self._truncated(tail)
        gone = [key for key in self._entries if key not in seen and key not in self._tails]
        for key in gone:
            del self._entries[key]
            self._read_upto.pop(key, None)
            self._store.dirty = True

    def _open(self, path: str, st: os.stat_result, *, initial: bool) -> None:
        key = f"{st.st_dev}:{st.st_ino}"
        if key in self._tails or not self._mine(key):
            return
        entry = self._entries.get(key)
        if entry is not None and self._resume_at(key, entry) == (st.st_size, False):
            return  # known and unchanged: no need to hold it open
        if len(self._tails) >= self.config.max_open_files:
            if (path, "max_open_files") not in self._warned:
                self._warned.add((path, "max_open_files"))
                log.warning(
                    "file input %s: max_open_files (%d) reached; %s waits",
                    self.name,
                    self.config.max_open_files,
                    path,
                )
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            self._unreadable(path, error)
            return
        try:
            st = os.fstat(fd)  # the file opened, whatever the path names by now
            key = f"{st.st_dev}:{st.st_ino}"
            if key in self._tails or not self._mine(key):
                os.close(fd)
                return
            entry = self._entries.get(key)
            if entry is not None and not _fingerprint_matches(fd, entry):
                log.info("file input %s: %s is a new file (inode reused)", self.name, path)
                entry = None
            if entry is not None:
                offset, skip = self._resume_at(key, entry)
                if offset > st.st_size:
                    self.metrics.file_change("file_truncated")
                    log.info("file input %s: %s was truncated; reading from 0", self.name, path)
                    entry = None
                    initial = False
                else:
                    entry["path"] = path  # in place: confirmations on their way still count
            if entry is None:
                offset = st.st_size if initial and self.config.start_position == "end" else 0
                skip = False
                entry = {
                    "path": path,
                    "offset": offset,
                    "skip": False,
                    "fingerprint": "",
                    "fingerprint_bytes": 0,
                }
        except OSError as error:
            os.close(fd)
            self._unreadable(path, error)
            return
        self._read_upto.pop(key, None)
        self._entries[key] = entry
        self._store.dirty = True
        tail = _Tail(path, fd, key, entry, self._clock.monotonic(), offset, skip)
        self._tails[key] = tail
        self._warned.discard((path, "max_open_files"))
        self._warned.discard((path, "unreadable"))
        if tail.fp_bytes < FINGERPRINT_BYTES and tail.refresh_fingerprint():
            self._store.dirty = True
        log.debug("file input %s: following %s from %d", self.name, path, tail.offset)

    def _resume_at(self, key: str, entry: dict[str, Any]) -> tuple[int, bool]:
        """Where to read a known file from: its checkpoint, or further if this run
        read further before closing it."""
        checkpoint: tuple[int, bool] = (entry["offset"], entry["skip"])
        return max(checkpoint, self._read_upto.get(key, checkpoint))

    def _close(self, tail: _Tail) -> None:
        self._tails.pop(tail.key, None)
        self._read_upto[tail.key] = (tail.offset - len(tail.partial), tail.skip)
        with contextlib.suppress(OSError):
            os.close(tail.fd)

    def _at_end(self, tail: _Tail) -> None:
        """Nothing more to read: look for truncation, rotation, deletion, a line to flush."""
        try:
            size = os.fstat(tail.fd).st_size
        except OSError as error:
            self._unreadable(tail.path, error)
            self._close(tail)
            return
        if size < tail.offset:
            self._truncated(tail)
            return
        now = self._clock.monotonic()
        idle = now - tail.grew_at
        if tail.detached is None:
            self._check_path(tail)
        if tail.partial and idle >= self.config.eof_flush_secs:
            self._flush_partial(tail)
        if tail.detached == "file_disappeared" or (
            tail.detached is not None and idle >= self.config.eof_flush_secs
        ):
            self._flush_partial(tail)
            self._close(tail)
            if tail.detached == "file_disappeared":
                self._entries.pop(tail.key, None)
                self._read_upto.pop(tail.key, None)
                self._store.dirty = True
            log.info("file input %s: closed %s (%s)", self.name, tail.path, tail.detached)
        elif (
            tail.detached is None
            and idle >= self.config.close_inactive_secs
            and not tail.partial
            and tail.held_from is None
            and tail.entry["offset"] == tail.offset
        ):
            self._close(tail)  # everything confirmed: reopened when it grows

    def _check_path(self, tail: _Tail) -> None:
        """Mark ``tail`` detached when its path no longer names it."""
        try:
            st = os.stat(tail.path)
            same = f"{st.st_dev}:{st.st_ino}" == tail.key
        except OSError:
            st, same = None, False
        if same:
            return
        try:
            linked = os.fstat(tail.fd).st_nlink > 0
        except OSError:
            linked = False
        tail.detached = "file_rotated" if linked else "file_disappeared"
        self.metrics.file_change(tail.detached)
        log.info("file input %s: %s %s", self.name, tail.path, tail.detached.removeprefix("file_"))
        if st is not None and stat.S_ISREG(st.st_mode):
            self._open(tail.path, st, initial=False)  # the new file at the path, from its start

    def _truncated(self, tail: _Tail) -> None:
        self.metrics.file_change("file_truncated")
        log.info("file input %s: %s was truncated; reading from 0", self.name, tail.path)
        tail.generation += 1
        tail.offset = 0
        tail.partial = b""
        tail.skip = False
        tail.held_from = None
        tail.fp, tail.fp_bytes = "", 0
        tail.entry.update(offset=0, skip=False, fingerprint="", fingerprint_bytes=0)
        self._store.dirty = True

    def _flush_partial(self, tail: _Tail) -> None:
        """Deliver the line the file ends with, though its newline has not come."""
        if not tail.partial:
            return
        line, tail.partial = tail.partial, b""
        batch: Batch = []
        self._decoder.line(tail, line, tail.offset - len(line), now_timestamp(), batch)
        if batch:
            self.metrics.decode_issue("truncated_line")
        self._deliver(tail, batch)

    def _unreadable(self, path: str, error: OSError) -> None:
        """Log once per path (until it is read again) and count."""
        if (path, "unreadable") in self._warned:
            return
        self._warned.add((path, "unreadable"))
        self.metrics.file_change("file_unreadable")
        log.warning("file input %s: cannot read %s: %s", self.name, path, error)


def _fingerprint_matches(fd: int, entry: dict[str, Any]) -> bool:
    size: int = entry["fingerprint_bytes"]
    if size == 0:
        return True
    head = os.pread(fd, size, 0)
    return len(head) == size and fingerprint(head) == str(entry["fingerprint"])


def checkpoint_path(config: FileInputConfig, name: str, state_dir: Path) -> Path:
    """Where the file input ``name`` keeps its checkpoint (in worker ``state_dir``)."""
    if config.checkpoint_file is not None:
        return config.checkpoint_file.expanduser()
    return state_dir / "file" / f"{name}.json"


def matching_paths(patterns: list[str], exclude: list[str]) -> list[str]:
    """The absolute paths matching the glob ``patterns``, less ``exclude`` (globs
    matched against the path and the file name)."""
    found: set[str] = set()
    for pattern in patterns:
        for match in glob.glob(os.path.expanduser(pattern), recursive=True):
            path = os.path.abspath(match)
            name = os.path.basename(path)
            if any(fnmatch.fnmatch(path, x) or fnmatch.fnmatch(name, x) for x in exclude):
                continue
            found.add(path)
    return sorted(found)
