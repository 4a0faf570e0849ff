"""The ``tcp`` input: newline-delimited JSON (Logstash's ``tcp`` input with ``json_lines``).

::

    inputs:
      - type: tcp
        listen: "127.0.0.1:5959"        # python-logstash's default port
        max_line_bytes: 1048576
        max_connections: 10000
        idle_timeout_secs: 300          # default: never close idle clients

How a chunk travels (one ``data_received`` call, up to 256 KiB on uvloop)::

    chunk -> bytes.split(b"\\n") -> [held partial line + first piece, lines..., tail]
          -> decode_json per line (orjson) -> one batch -> ingest.push(batch)
          -> ingest full? pause_reading() until ingest.call_when_drained(resume)

Flow control: a client whose chunk arrives while ingest is already full (another
client filled it) keeps that chunk as bytes and pauses too; it is decoded on
resume. So ingest overshoots its limit by one chunk at most, however many
clients send, and a blocked sink stops the reads instead of growing memory.

Every client is an ``asyncio.Protocol`` (no task, no stream reader per
connection), so thousands of idle clients cost one small object each. The
hot path does per chunk what it can (counting, splitting, the length check
for lines that cannot be too long) and per line only the decoding, the
``host`` default and the append.

Bad input never stops a connection, and one client never affects another:

- a line that is not a JSON object becomes ``{"message": <raw text>}`` tagged
  ``_jsonparsefailure``; invalid UTF-8 is replaced and tagged ``_utf8error``;
- a line longer than ``max_line_bytes`` becomes ``{"message": <its first
  max_line_bytes, as text>}`` tagged ``_linetoolong``, as soon as the limit is
  passed (the cut falls on a character boundary); the rest of it, up to its
  newline, is skipped as it arrives, so a connection never holds more than
  ``max_line_bytes`` of a line;
- a partial line left when the client disconnects, or when the input stops
  or closes an idle client, is delivered like any line and counted as
  ``truncated_line``;
- blank lines (keep-alives, ``\\r\\n\\r\\n``) are skipped.

Events without a ``host`` get the client's IP address, as Logstash's tcp
input does. Each issue is counted on ``metrics.decode_issues``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, Literal, cast

from pydantic import Field, field_validator

from logstream.buffer import BatchBuffer, BufferClosed
from logstream.event import (
    TAG_LINE_TOO_LONG,
    TAG_UTF8_ERROR,
    Batch,
    Event,
    decode_json,
    failed_event,
)
from logstream.metrics import DecodeIssue, UnitMetrics
from logstream.netaddr import parse_listen
from logstream.tls import TlsServerSettings
from logstream.units import BuildContext, Input, InputConfig

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
# Pending connections the kernel may queue before accept (capped by somaxconn);
# high so a burst of clients connecting at once is not slowed by SYN retries.
_BACKLOG: Final = 4096


def cut_line(line: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes of ``line``, less a UTF-8 character the cut would split."""
    end = limit
    if len(line) > end:
        # line[end] is the first byte left out; a continuation byte there means the
        # character began at most 3 bytes before.
        while end > 0 and end > limit - 3 and line[end] & 0xC0 == 0x80:
            end -= 1
    return line[:end]


def too_long_event(line: bytes, limit: int, metrics: UnitMetrics) -> Event:
    """The event for a line (or datagram) longer than ``limit``: its start as ``message``,
    tagged ``_linetoolong``, counted.

    No JSON decoding is tried: a cut line cannot be a complete object, and orjson's
    error for a long document costs about twelve times its size in memory.
    """
    cut = cut_line(line, limit)
    metrics.decode_issue("line_too_long")
    try:
        return failed_event(cut.decode(), TAG_LINE_TOO_LONG)
    except UnicodeDecodeError:
        metrics.decode_issue("invalid_utf8")
        return failed_event(cut.decode("utf-8", "replace"), TAG_UTF8_ERROR, TAG_LINE_TOO_LONG)


class StreamListenerConfig(InputConfig):
    """Settings of every input that listens on a TCP socket (tcp, beats, syslog):
    where, how many clients, how long idle, TLS. Each sets its own default port."""

    listen: str = Field(
        default="127.0.0.1:5959",
        description="host:port to listen on; port 0 picks any free port.",
    )
    max_connections: int = Field(
        default=10_000,
        ge=1,
        description="Clients beyond this many open connections are refused (and counted).",
    )
    idle_timeout_secs: float | None = Field(
        default=None,
        gt=0,
        description="Close a client that sent nothing for this long (default: never).",
    )
    tls: TlsServerSettings | None = Field(
        default=None, description="Serve TLS with this certificate (see logstream.tls)."
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class TcpInputConfig(StreamListenerConfig):
    """Receive newline-delimited JSON events over TCP."""

    type: Literal["tcp"]
    max_line_bytes: int = Field(
        default=MIB,
        ge=1,
        description="Longer lines are cut to this size and tagged _linetoolong.",
    )

    def build(self, name: str, ctx: BuildContext) -> TcpInput:
        return TcpInput(self, name, ctx.registry.unit(name, "input"))


class TcpInput(Input):
    """A listening socket and its client connections, all on the event loop."""

    def __init__(self, config: TcpInputConfig, name: str, metrics: UnitMetrics) -> None:
        super().__init__(name, metrics)
        self.config = config
        self.host, self.port = parse_listen(config.listen)
        self.max_line_bytes = config.max_line_bytes
        self._ssl = None if config.tls is None else config.tls.context(name)
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._connections: set[_Connection] = set()
        self._stopped = False
        self._refusing = False
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.loop_time = time.monotonic  # the running loop's clock once started

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (the real port when ``listen`` asked for port 0)."""
        if self._address is None:
            raise RuntimeError(f"tcp input {self.name!r} has not started")
        return self._address

    def _new_connection(self, ingest: BatchBuffer) -> asyncio.Protocol:
        """The protocol object of one accepted client; inputs that share this
        server but speak another wire format (syslog, beats) override it."""
        return _Connection(self, ingest)

    async def start(self, ingest: BatchBuffer) -> None:
        loop = asyncio.get_running_loop()
        self.loop_time = loop.time
        self._server = await loop.create_server(
            lambda: self._new_connection(ingest),
            self.host,
            self.port,
            backlog=_BACKLOG,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            ssl=self._ssl,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (host, port)
        if self.config.idle_timeout_secs is not None:
            self._schedule_sweep(loop, self.config.idle_timeout_secs)
        log.info(
            "tcp input %s listening on %s:%d%s",
            self.name,
            *self.address,
            " (TLS)" if self._ssl is not None else "",
        )

    async def stop(self) -> None:
        self._stopped = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        server, self._server = self._server, None
        try:
            if server is not None:
                server.close()
            for conn in list(self._connections):
                conn.close("stop")
            if server is not None:
                await asyncio.wait_for(server.wait_closed(), timeout=5.0)
            await asyncio.sleep(0)  # let the closed clients' connection_lost run
        except Exception:
            log.exception("tcp input %s: error while stopping", self.name)

    # ----------------------------------------------------------------- connections

    def _accept(self, conn: _Connection) -> bool:
        """Register a new client; ``False`` when it must be refused."""
        if self._stopped:
            return False
        if len(self._connections) >= self.config.max_connections:
            self.metrics.drop(1, "too_many_connections")
            if not self._refusing:
                self._refusing = True
                log.warning(
                    "tcp input %s: max_connections (%d) reached; refusing new clients",
                    self.name,
                    self.config.max_connections,
                )
            return False
        self._refusing = False
        self._connections.add(conn)
        self.metrics.connections = len(self._connections)
        return True

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        self.metrics.connections = len(self._connections)

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop, idle_secs: float) -> None:
        # A client is closed between idle_secs and 1.25 * idle_secs after its last data.
        interval = idle_secs / 4

        def sweep() -> None:
            deadline = loop.time() - idle_secs
            for conn in list(self._connections):
                # A paused client is waiting for us, not idle.
                if conn.last_active < deadline and not conn.paused:
                    conn.close("idle")
            self._sweep_handle = loop.call_later(interval, sweep)

        self._sweep_handle = loop.call_later(interval, sweep)


class _Connection(asyncio.Protocol):
    """One client. Holds at most ``max_line_bytes`` of an unfinished line."""

    __slots__ = (
        "_closed",
        "_discarding",
        "_ingest",
        "_input",
        "_limit",
        "_metrics",
        "_partial",
        "_partial_len",
        "_peer",
        "_time",
        "_transport",
        "_waiting",
        "last_active",
        "paused",
    )

    def __init__(self, owner: TcpInput, ingest: BatchBuffer) -> None:
        self._input = owner
        self._ingest = ingest
        self._metrics = owner.metrics
        self._limit = owner.max_line_bytes
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        # The unfinished last line, as the chunks it came in (joined once, when
        # its newline arrives: no quadratic concatenation), and its length.
        self._partial: list[bytes] = []
        self._partial_len = 0
        # True while skipping the rest of a line already cut at the limit.
        self._discarding = False
        # Chunks read while paused or while ingest was full, processed once it drains.
        self._waiting: list[bytes] = []
        self._closed = False
        self.paused = False
        self._time = owner.loop_time
        self.last_active = self._time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # create_server makes stream transports
        if not self._input._accept(self):
            self._closed = True
            stream.abort()
            return
        self._transport = stream
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._metrics.bytes_in += len(data)
        self.last_active = self._time()
        if self.paused or self._ingest.full:
            # Another client filled ingest (or a TLS transport delivered one more
            # chunk after pause_reading): keep it as it came (bytes are smaller than
            # events) and stop reading until ingest drains.
            self._waiting.append(data)
            self._pause()
            return
        self._process(data)

    def _process(self, data: bytes) -> None:
        """Split a chunk into lines, decode them, deliver them as one batch."""
        lines = data.split(b"\n")
        tail = lines.pop()
        held = self._partial_len
        if lines:
            if self._partial:
                self._partial.append(lines[0])
                lines[0] = b"".join(self._partial)
                self._partial = []
                self._partial_len = 0
            elif self._discarding:
                # The rest of a line already delivered cut at the limit.
                del lines[0]
                self._discarding = False
        elif self._discarding:
            return
        # No line can be too long when the whole chunk, with what was held, fits.
        if len(data) + held <= self._limit:
            batch = self._decode(lines)
        else:
            batch = self._decode_checked(lines)
        if tail:
            self._hold(tail, batch)
        if batch:
            self._deliver(batch)

    def _decode(self, lines: list[bytes]) -> Batch:
        """The hot path: decode lines known to fit the limit."""
        batch: Batch = []
        append = batch.append
        peer = self._peer
        for line in lines:
            event, issue = decode_json(line)
            if issue is not None:
                if not line.strip():
                    continue
                self._metrics.decode_issue(cast(DecodeIssue, issue))
            if "host" not in event:
                event["host"] = peer
            append(event)
        return batch

    def _decode_checked(self, lines: list[bytes]) -> Batch:
        """Like ``_decode``, but lines longer than the limit are cut and tagged."""
        batch: Batch = []
        limit = self._limit
        fitting: list[bytes] = []
        for line in lines:
            if len(line) > limit:
                batch += self._decode(fitting)
                fitting = []
                batch.append(self._too_long(line))
            else:
                fitting.append(line)
        batch += self._decode(fitting)
        return batch

    def _too_long(self, line: bytes) -> Event:
        event = too_long_event(line, self._limit, self._metrics)
        event["host"] = self._peer
        return event

    def _hold(self, tail: bytes, batch: Batch) -> None:
        """Keep the unfinished last line; past the limit, deliver its start and skip the rest."""
        self._partial.append(tail)
        self._partial_len += len(tail)
        if self._partial_len > self._limit:
            line = b"".join(self._partial)
            self._partial = []
            self._partial_len = 0
            self._discarding = True
            batch.append(self._too_long(line))

    def _deliver(self, batch: Batch) -> bool:
        """Push ``batch`` into ingest (pausing when it fills); False if ingest is closed."""
        ingest = self._ingest
        try:
            ingest.push(batch)
        except BufferClosed:
            # Ingest closed under us: the pipeline stops inputs before closing it,
            # so this only happens when a caller does not; count, never raise.
            self._metrics.drop(len(batch), "shutdown")
            return False
        self._metrics.events_in += len(batch)
        if ingest.full:
            self._pause()
        return True

    def _pause(self) -> None:
        if self.paused or self._closed or self._transport is None:
            return
        self.paused = True
        self._transport.pause_reading()
        self._ingest.call_when_drained(self._resume)

    def _resume(self) -> None:
        # Called by the ingest buffer when it drains, possibly after this client
        # closed [1] or, through ingest.close(), after the input stopped [2].
        if not self.paused:
            return
        self.paused = False
        if self._closed or self._transport is None or self._transport.is_closing():  # [1] [2]
            return
        self.last_active = self._time()
        while self._waiting:
            self._process(self._waiting.pop(0))
            if self.paused or self._closed:  # full again, or a protocol error
                return
        self._transport.resume_reading()

    def _flush_partial(self) -> None:
        """Deliver the unfinished line, if any, as a truncated line."""
        if not self._partial:
            return
        line = b"".join(self._partial)
        self._partial = []
        self._partial_len = 0
        batch = self._decode([line])
        if batch:
            self._metrics.decode_issue("truncated_line")
            self._deliver(batch)

    def _finish(self) -> None:
        """Deliver everything read: a chunk waiting for room, then the unfinished line."""
        self._closed = True  # [2] and no pausing while delivering the rest
        waiting, self._waiting = self._waiting, []
        for data in waiting:
            self._process(data)
        self._flush_partial()

    def close(self, why: str) -> None:
        """Close from our side (stop, idle) after delivering what was read."""
        if self._closed:
            return
        self._finish()
        log.debug("input %s: closing %s (%s)", self._input.name, self._peer, why)
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._finish()
        self._input._forget(self)
        self._transport = None
