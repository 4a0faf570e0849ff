"""The ``beats`` input: the Lumberjack v2 protocol of Filebeat and the other Beats.

::

    inputs:
      - type: beats
        listen: "127.0.0.1:5044"
        max_frame_bytes: 33554432       # declared frame / JSON / decompressed size limit
        max_connections: 10000
        idle_timeout_secs: 300          # default: never close idle clients
        ack_keepalive_secs: 5           # partial ACKs while a window is incomplete

Frames (all integers big-endian uint32, every frame starts with version ``2``)::

    2W count                      window: the next ``count`` events form one window
    2J seq len <len bytes JSON>   one event
    2D seq pairs (klen k vlen v)* one legacy key/value event
    2C len <len bytes zlib>       more frames, compressed
    2A seq                        (server to client) acknowledgement

ACKs: a window's last sequence is acknowledged only once every event of the
window is safe: the pipeline has handed it to every sink (for an
Elasticsearch sink with a spool, written to the spool on disk). A chunk read
while ingest is full is kept as bytes and the connection pauses (as the
``tcp`` input does); its events, and so its ACK, wait until ingest drains.
While a window is incomplete (a slow client, or a paused connection), the
sequence of the last safe event is acknowledged every ``ack_keepalive_secs``
so the client does not time out.

Bounds: a declared length over ``max_frame_bytes`` is never allocated; the
connection is closed. Compressed payloads are inflated at most to
``max_frame_bytes`` (a zip bomb is cut and the connection closed). An unknown
version or frame type closes the connection. Each such close is counted on
``logstream_protocol_errors_total`` by reason. A JSON
frame that is not an object becomes an event tagged ``_jsonparsefailure``
(counted as ``json_parse_failure``). Beats metadata (``@metadata``, ``agent``,
``log.file.path``...) is kept as sent; events without a ``host`` get the
client's IP address.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal, cast

from pydantic import Field

from logstream.buffer import BatchBuffer
from logstream.event import Batch, Event, decode_json, normalise
from logstream.inputs.tcp import MIB, StreamListenerConfig, TcpInput, TcpInputConfig, _Connection
from logstream.metrics import DecodeIssue, UnitMetrics
from logstream.units import BuildContext

log = logging.getLogger(__name__)

VERSION: Final = ord("2")
WINDOW: Final = ord("W")
JSON: Final = ord("J")
DATA: Final = ord("D")
COMPRESSED: Final = ord("C")
ACK: Final = ord("A")

_U32: Final = struct.Struct(">I")
_U32_PAIR: Final = struct.Struct(">II")
_ACK: Final = struct.Struct(">BBI")

ProtocolError = Literal[
    # A frame did not start with version "2".
    "bad_version",
    # A frame type other than W, J, D, C.
    "unknown_frame_type",
    # A declared length over max_frame_bytes (never allocated).
    "frame_too_large",
    # A compressed frame inflating past max_frame_bytes (zip bomb).
    "decompressed_too_large",
    # A compressed frame that is not valid zlib or holds a partial frame.
    "bad_compressed_frame",
]


def ack_frame(seq: int) -> bytes:
    return _ACK.pack(VERSION, ACK, seq & 0xFFFFFFFF)


@dataclass(slots=True)
class Decoded:
    """What one ``feed`` produced: events and window starts in order, or an error."""

    # ("W", count) or ("E", seq, event, issue)
    items: list[tuple[object, ...]]
    error: ProtocolError | None = None


class FrameDecoder:
    """Incremental Lumberjack v2 decoder over a byte buffer.

    ``feed`` never raises; after an error it decodes nothing more. Between
    calls it holds at most one partial frame: at most ``max_frame_bytes`` plus
    a 10-byte header.
    """

    __slots__ = ("_buf", "_max", "error")

    def __init__(self, max_frame_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes
        self.error: ProtocolError | None = None

    @property
    def held(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> Decoded:
        out = Decoded([])
        if self.error is not None:
            return out
        self._buf += data
        pos = self._parse(self._buf, out, allow_compressed=True)
        del self._buf[:pos]
        if out.error is not None:
            self.error = out.error
            self._buf.clear()
        return out

    def _parse(self, buf: bytearray | bytes, out: Decoded, *, allow_compressed: bool) -> int:
        """Decode whole frames from ``buf``; return the offset of the first partial one."""
        pos = 0
        end = len(buf)
        limit = self._max
        items = out.items
        while end - pos >= 2:
            if buf[pos] != VERSION:
                out.error = "bad_version"
                return pos
            kind = buf[pos + 1]
            if kind == JSON:
                if end - pos < 10:
                    break
                seq, length = _U32_PAIR.unpack_from(buf, pos + 2)
                if length > limit:
                    out.error = "frame_too_large"
                    return pos
                if end - pos < 10 + length:
                    break
                event, issue = decode_json(bytes(buf[pos + 10 : pos + 10 + length]))
                items.append(("E", seq, event, issue))
                pos += 10 + length
            elif kind == WINDOW:
                if end - pos < 6:
                    break
                items.append(("W", _U32.unpack_from(buf, pos + 2)[0]))
                pos += 6
            elif kind == DATA:
                done = self._data_frame(buf, pos, end, out)
                if done < 0:
                    break
                if out.error is not None:
                    return pos
                pos = done
            elif kind == COMPRESSED and allow_compressed:
                if end - pos < 6:
                    break
                (length,) = _U32.unpack_from(buf, pos + 2)
                if length > limit:
                    out.error = "frame_too_large"
                    return pos
                if end - pos < 6 + length:
                    break
                self._inflate(bytes(buf[pos + 6 : pos + 6 + length]), out)
                if out.error is not None:
                    return pos
                pos += 6 + length
            else:
                out.error = "unknown_frame_type"
                return pos
        return pos

    def _data_frame(self, buf: bytearray | bytes, pos: int, end: int, out: Decoded) -> int:
        """Decode a ``2D`` frame at ``pos``: the offset after it, or -1 if incomplete."""
        if end - pos < 10:
            return -1
        seq, pairs = _U32_PAIR.unpack_from(buf, pos + 2)
        at = pos + 10
        fields: dict[str, str] = {}
        for _ in range(pairs):
            values: list[str] = []
            for _ in range(2):
                if end - at < 4:
                    return -1
                (length,) = _U32.unpack_from(buf, at)
                if length > self._max or at + 4 + length - pos > self._max + 10:
                    out.error = "frame_too_large"
                    return at
                if end - at < 4 + length:
                    return -1
                values.append(bytes(buf[at + 4 : at + 4 + length]).decode("utf-8", "replace"))
                at += 4 + length
            fields[values[0]] = values[1]
            if at - pos > self._max + 10:
                out.error = "frame_too_large"
                return at
        event: Event = dict(fields)
        if "line" in event and "message" not in event:
            event["message"] = event.pop("line")
        out.items.append(("E", seq, normalise(event), None))
        return at

    def _inflate(self, payload: bytes, out: Decoded) -> None:
        inflater = zlib.decompressobj()
        try:
            inner = inflater.decompress(payload, self._max)
        except zlib.error:
            out.error = "bad_compressed_frame"
            return
        if inflater.unconsumed_tail or (len(inner) >= self._max and not inflater.eof):
            out.error = "decompressed_too_large"
            return
        if not inflater.eof:
            out.error = "bad_compressed_frame"  # a truncated zlib stream
            return
        if self._parse(inner, out, allow_compressed=False) != len(inner) and out.error is None:
            out.error = "bad_compressed_frame"


class BeatsInputConfig(StreamListenerConfig):
    """Receive events from Filebeat and other Beats clients (Lumberjack v2)."""

    type: Literal["beats"]
    listen: str = Field(
        default="127.0.0.1:5044",
        description="host:port to listen on; port 0 picks any free port.",
    )
    max_frame_bytes: int = Field(
        default=32 * MIB,
        ge=16,
        description="Largest declared frame, JSON or decompressed size; beyond it the "
        "connection is closed and counted.",
    )
    ack_keepalive_secs: float = Field(
        default=5.0,
        gt=0,
        description="While a window is incomplete, acknowledge the last safe event this often.",
    )

    def build(self, name: str, ctx: BuildContext) -> BeatsInput:
        return BeatsInput(self, name, ctx.registry.unit(name, "input"))


class BeatsInput(TcpInput):
    """Like the tcp input (accepting, max_connections, idle sweep, stop), with
    Lumberjack connections."""

    def __init__(self, config: BeatsInputConfig, name: str, metrics: UnitMetrics) -> None:
        super().__init__(
            TcpInputConfig(
                type="tcp",
                listen=config.listen,
                max_line_bytes=config.max_frame_bytes,
                max_connections=config.max_connections,
                idle_timeout_secs=config.idle_timeout_secs,
                tls=config.tls,
            ),
            name,
            metrics,
        )
        self.beats_config = config
        self._connections: set[_BeatsConnection] = set()  # type: ignore[assignment]
        self._keepalive_handle: asyncio.TimerHandle | None = None
        # Connections closed for a protocol violation, by reason
        # (logstream_protocol_errors_total).
        self.protocol_errors = self.metrics.protocol_errors

    def _new_connection(self, ingest: BatchBuffer) -> asyncio.Protocol:
        return _BeatsConnection(self, ingest)

    async def start(self, ingest: BatchBuffer) -> None:
        await super().start(ingest)
        loop = asyncio.get_running_loop()
        interval = self.beats_config.ack_keepalive_secs

        def keepalive() -> None:
            for conn in list(self._connections):
                conn.keepalive()
            self._keepalive_handle = loop.call_later(interval, keepalive)

        self._keepalive_handle = loop.call_later(interval, keepalive)

    async def stop(self) -> None:
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        await super().stop()

    def protocol_error(self, reason: ProtocolError, peer: str) -> None:
        self.protocol_errors[reason] += 1
        log.warning("beats input %s: closing %s: %s", self.name, peer, reason)


class _BeatsConnection(_Connection):
    """One Beats client: the tcp input's connection (accepting, flow control, close)
    with the Lumberjack decoder and window state instead of lines."""

    __slots__ = ("_beats", "_decoder", "_last_pushed", "_last_safe", "_window", "_window_left")

    def __init__(self, owner: BeatsInput, ingest: BatchBuffer) -> None:
        super().__init__(owner, ingest)
        self._beats = owner
        self._decoder = FrameDecoder(owner.beats_config.max_frame_bytes)
        # Events of the current window still expected; its last sequence pushed.
        self._window_left = 0
        self._last_pushed: int | None = None
        # The current window's number and the last of its sequences that is safe
        # (handed to every sink): what a keep-alive may acknowledge.
        self._window = 0
        self._last_safe: int | None = None

    def _process(self, data: bytes) -> None:
        decoded = self._decoder.feed(data)
        batch: Batch = []
        # One ACK per window completed in this chunk: a pipelining client (Filebeat)
        # matches each ACK to its oldest outstanding window.
        acks: list[int] = []
        peer = self._peer
        for item in decoded.items:
            if item[0] == "W":
                self._window_left = cast(int, item[1])
                # Keep-alives acknowledge only this window's events: an older sequence
                # would read as "all acked" to a client numbering each window from 1.
                self._last_pushed = None
                self._window += 1
                self._last_safe = None
                continue
            _, seq, event, issue = item
            event = cast(Event, event)
            if issue is not None:
                self._metrics.decode_issue(cast(DecodeIssue, issue))
            if "host" not in event:
                event["host"] = peer
            batch.append(event)
            self._last_pushed = cast(int, seq)
            if self._window_left > 0:
                self._window_left -= 1
                if self._window_left == 0:
                    acks.append(self._last_pushed)
        if batch and self._deliver(batch):
            self._ingest.call_when_safe(
                self._ingest.accepted, partial(self._safe, self._window, self._last_pushed, acks)
            )
        if decoded.error is not None:
            self._beats.protocol_error(decoded.error, peer)
            self._closed = True
            if self._transport is not None:
                self._transport.abort()

    def _safe(self, window: int, last: int | None, acks: list[int]) -> None:
        """Events pushed up to sequence ``last`` of ``window`` are safe: acknowledge
        the windows they completed, and let keep-alives acknowledge ``last``."""
        if window == self._window:
            self._last_safe = last
        for seq in acks:
            self._send_ack(seq)

    def _send_ack(self, seq: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(ack_frame(seq))

    def keepalive(self) -> None:
        """Partial ACK of the last safe event while a window is incomplete."""
        if self._closed or self._window_left == 0 or self._last_safe is None:
            return
        self._send_ack(self._last_safe)
