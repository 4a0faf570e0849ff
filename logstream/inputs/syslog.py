"""The ``syslog`` input: RFC 3164 and RFC 5424 messages over UDP and TCP.

::

    inputs:
      - type: syslog
        listen: "127.0.0.1:5514"
        protocol: both                  # udp | tcp | both (same port)
        max_message_bytes: 65536
        max_connections: 10000          # tcp
        idle_timeout_secs: 300          # tcp; default: never close idle clients

TCP framing (RFC 6587) is detected per frame: a frame that starts with a digit
is octet-counted (``LEN SP MSG``); any other is a line ended by ``\\n`` or NUL
(Python's ``SysLogHandler`` ends messages with NUL). A declared length larger
than ``max_message_bytes`` is never allocated: the first ``max_message_bytes``
are delivered tagged ``_linetoolong`` and the rest is skipped as it arrives.
A connection holds at most ``max_message_bytes`` plus a 10-digit length.

The TCP side is the ``tcp`` input's server and connection (same flow control,
``max_connections``, idle sweep, stop semantics) with this framing and
parsing in place of JSON lines; the UDP side is the ``udp`` input's receiver
(one message per datagram, ``ingest_full`` drops).

Messages are parsed with :mod:`logstream.parsers.syslog`: ``<PRI>`` gives
``syslog_facility``, ``syslog_severity`` and ``level`` (logstream's scale);
also ``host`` (else the peer's IP), ``program``, ``pid``, ``message``,
``@timestamp`` (UTC), and for RFC 5424 ``syslog_msgid`` and ``syslog_sd``.
A bare ``<PRI>text`` (no header, as ``SysLogHandler`` sends) keeps the PRI
fields and the text. Anything else is kept as ``message`` tagged
``_syslogparsefailure`` and counted as ``unparsed``; invalid UTF-8 is replaced
and tagged ``_utf8error``. Nothing a client sends raises.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from logstream.buffer import BatchBuffer
from logstream.clock import Clock
from logstream.event import (
    TAG_LINE_TOO_LONG,
    TAG_UTF8_ERROR,
    Batch,
    Event,
    add_tag,
    now_timestamp,
)
from logstream.inputs import tcp, udp
from logstream.metrics import UnitMetrics
from logstream.parsers.common import Timestamps
from logstream.parsers.syslog import Rfc5424Parser, SyslogParser, _program
from logstream.severity import from_syslog
from logstream.units import BuildContext, Input

log = logging.getLogger(__name__)

TAG_SYSLOG_FAILURE: Final = "_syslogparsefailure"
# Digits of an octet-counting length: 10 covers any length we could accept.
MAX_LENGTH_DIGITS: Final = 10
_IS_5424: Final = re.compile(rb"<\d{1,3}>[1-9]\d{0,2} ")
_BARE_PRI: Final = re.compile(r"<(\d{1,3})>(.*)\Z", re.DOTALL)
_DIGITS: Final = frozenset(b"0123456789")
_TRAILING: Final = b"\r\n\x00"
_BETWEEN_FRAMES: Final = frozenset(b"\r\n\x00 ")


class SyslogInputConfig(tcp.StreamListenerConfig):
    """Receive syslog messages (RFC 3164, RFC 5424) over UDP, TCP or both.

    ``max_connections``, ``idle_timeout_secs`` and ``tls`` apply to the TCP side.
    """

    type: Literal["syslog"]
    listen: str = Field(
        default="127.0.0.1:5514",
        description="host:port to listen on (both protocols); port 0 picks any free port.",
    )
    protocol: Literal["udp", "tcp", "both"] = Field(default="both")
    max_message_bytes: int = Field(
        default=65_536,
        ge=16,
        le=16 * tcp.MIB,
        description="Longer messages are cut to this size and tagged _linetoolong.",
    )

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> SyslogInputConfig:
        if self.tls is not None and self.protocol != "tcp":
            raise ValueError(
                f"tls needs protocol: tcp (syslog over UDP has no TLS), value: {self.protocol!r}"
            )
        return self

    def build(self, name: str, ctx: BuildContext) -> SyslogInput:
        return SyslogInput(self, name, ctx.registry.unit(name, "input"), ctx.clock)


# --------------------------------------------------------------------------- framing


class FrameDecoder:
    """RFC 6587 framing of one TCP stream: octet counting or ``\\n``/NUL-terminated.

    ``feed`` returns ``(message, cut)`` pairs; ``cut`` is true for a message cut
    at ``limit``. Never raises; holds at most ``limit + MAX_LENGTH_DIGITS`` bytes.
    """

    __slots__ = ("_buf", "_header", "_limit", "_need", "_over", "_skip", "_skip_line")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()  # the message being assembled
        self._header = bytearray()  # digits of an octet count being read
        self._need = -1  # bytes of an octet-counted body still to come (-1: none)
        self._over = 0  # bytes of that frame beyond the limit, to skip after it
        self._skip = 0  # bytes still to skip
        self._skip_line = False  # skipping the rest of a line cut at the limit

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._header)

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = []
        pos, end, buf, limit = 0, len(data), self._buf, self._limit
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            elif self._need >= 0:
                step = min(self._need, end - pos)
                buf += data[pos : pos + step]
                pos += step
                self._need -= step
                if self._need == 0:
                    self._need = -1
                    out.append((bytes(buf), self._over > 0))
                    buf.clear()
                    self._skip, self._over = self._over, 0
            elif self._skip_line:
                stop = _terminator(data, pos)
                if stop < 0:
                    pos = end
                else:
                    pos = stop + 1
                    self._skip_line = False
            elif self._header or (not buf and data[pos] in _DIGITS):
                byte = data[pos]
                if byte in _DIGITS and len(self._header) < MAX_LENGTH_DIGITS:
                    self._header.append(byte)
                    pos += 1
                elif byte == 0x20 and self._header:
                    length = int(self._header)
                    self._header.clear()
                    pos += 1
                    if length == 0:
                        continue
                    self._need = min(length, limit)
                    self._over = length - self._need
                else:
                    # Not a length after all: the digits start a line.
                    buf += self._header
                    self._header.clear()
                    pos = self._line(data, pos, out)
            elif not buf and data[pos] in _BETWEEN_FRAMES:
                pos += 1  # whitespace between frames
            else:
                pos = self._line(data, pos, out)
        return out

    def _line(self, data: bytes, pos: int, out: list[tuple[bytes, bool]]) -> int:
        """Take line bytes from ``pos``; return the position after what was taken."""
        buf, room = self._buf, self._limit - len(self._buf)
        stop = _terminator(data, pos, pos + room + 1)
        if stop >= 0:
            buf += data[pos:stop]
            out.append((bytes(buf), False))
            buf.clear()
            return stop + 1
        take = min(len(data) - pos, room + 1)
        buf += data[pos : pos + take]
        if len(buf) > self._limit:
            out.append((bytes(buf[: self._limit]), True))
            buf.clear()
            self._skip_line = True
        return pos + take

    def finish(self) -> bytes | None:
        """The unfinished message (its bytes so far), if any; resets the decoder."""
        partial = bytes(self._header + self._buf)
        self._buf.clear()
        self._header.clear()
        self._need, self._over, self._skip, self._skip_line = -1, 0, 0, False
        return partial or None


def _terminator(data: bytes, start: int, stop: int | None = None) -> int:
    """Index of the first ``\\n`` or NUL in ``data[start:stop]``, or -1."""
    stop = len(data) if stop is None else min(stop, len(data))
    newline = data.find(b"\n", start, stop)
    nul = data.find(b"\x00", start, stop if newline < 0 else newline)
    return nul if nul >= 0 else newline


# --------------------------------------------------------------------------- parsing


class MessageParser:
    """Raw syslog messages (bytes) to events. Never raises."""

    def __init__(self, clock: Clock, metrics: UnitMetrics) -> None:
        self._stamps = Timestamps(clock)
        self._rfc3164 = SyslogParser(self._stamps, journal=False)
        self._rfc5424 = Rfc5424Parser(self._stamps)
        self._metrics = metrics

    def refresh(self) -> None:
        self._stamps.refresh()

    def parse(self, raw: bytes, peer: str, cut: bool = False) -> Event | None:
        raw = raw.rstrip(_TRAILING)
        if not raw.strip():
            return None
        metrics = self._metrics
        if cut:
            raw = _whole_characters(raw)
        try:
            text = raw.decode()
            bad_utf8 = False
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            bad_utf8 = True
        fields = None
        if not cut:
            if _IS_5424.match(raw):
                fields = self._rfc5424.parse(text, {})
            else:
                fields = self._rfc3164.parse(text, {}) or _bare_pri(text)
        event: Event = {"@timestamp": "", "@version": "1"}
        if fields is None:
            event["message"] = text
            if cut:
                metrics.decode_issue("line_too_long")
                add_tag(event, TAG_LINE_TOO_LONG)
            else:
                metrics.decode_issue("unparsed")
            add_tag(event, TAG_SYSLOG_FAILURE)
        else:
            event.update(fields)
        if bad_utf8:
            metrics.decode_issue("invalid_utf8")
            add_tag(event, TAG_UTF8_ERROR)
        if not event["@timestamp"]:
            event["@timestamp"] = now_timestamp()
        if "host" not in event:
            event["host"] = peer
        return event


def _whole_characters(raw: bytes) -> bytes:
    """``raw`` less a UTF-8 character that a cut at its end split."""
    for drop in range(1, 4):
        if len(raw) > drop and raw[-drop] & 0xC0 == 0xC0:  # the split character's lead byte
            return raw[:-drop]
        if len(raw) <= drop or raw[-drop] & 0xC0 != 0x80:
            break
    return raw


def _bare_pri(text: str) -> dict[str, Any] | None:
    """``<PRI>text`` with no header (Python's ``SysLogHandler``)."""
    match = _BARE_PRI.match(text)
    if match is None or int(match.group(1)) > 191:
        return None
    number = int(match.group(1))
    fields: dict[str, Any] = {
        "format": "syslog",
        "syslog_facility": number >> 3,
        "syslog_severity": number & 7,
        "level": from_syslog(number & 7).name,
    }
    fields["message"] = _program(fields, match.group(2))
    return fields


# --------------------------------------------------------------------------- tcp


class _SyslogConnection(tcp._Connection):
    """The tcp input's connection with syslog framing and parsing."""

    __slots__ = ("_decoder", "_parser")

    def __init__(self, owner: _SyslogTcp, ingest: BatchBuffer) -> None:
        super().__init__(owner, ingest)
        self._decoder = FrameDecoder(owner.max_line_bytes)
        self._parser = owner.parser

    def _process(self, data: bytes) -> None:
        self._parser.refresh()
        batch = self._events(self._decoder.feed(data))
        if batch:
            self._deliver(batch)

    def _events(self, frames: list[tuple[bytes, bool]]) -> Batch:
        parse, peer = self._parser.parse, self._peer
        batch: Batch = []
        for raw, cut in frames:
            event = parse(raw, peer, cut)
            if event is not None:
                batch.append(event)
        return batch

    def _flush_partial(self) -> None:
        partial = self._decoder.finish()
        if partial is None:
            return
        batch = self._events([(partial, False)])
        if batch:
            self._metrics.decode_issue("truncated_line")
            self._deliver(batch)


class _SyslogTcp(tcp.TcpInput):
    def __init__(self, config: SyslogInputConfig, name: str, parser: MessageParser, metrics: Any):
        settings = tcp.TcpInputConfig(
            type="tcp",
            listen=config.listen,
            max_line_bytes=config.max_message_bytes,
            max_connections=config.max_connections,
            idle_timeout_secs=config.idle_timeout_secs,
            tls=config.tls,
        )
        super().__init__(settings, name, metrics)
        self.parser = parser

    def _new_connection(self, ingest: BatchBuffer) -> asyncio.Protocol:
        return _SyslogConnection(self, ingest)


# --------------------------------------------------------------------------- udp


class _SyslogReceiver(udp._Receiver):
    def __init__(self, owner: _SyslogUdp, ingest: BatchBuffer, loop: asyncio.AbstractEventLoop):
        super().__init__(owner, ingest, loop)
        self._parser = owner.parser

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._stopped:
            return
        self._metrics.bytes_in += len(data)
        cut = len(data) > self._limit
        event = self._parser.parse(data[: self._limit] if cut else data, addr[0], cut)
        if event is None:
            return
        if not self._pending:
            self._parser.refresh()
            self._loop.call_soon(self._flush)
        self._pending.append(event)


class _SyslogUdp(udp.UdpInput):
    def __init__(self, config: SyslogInputConfig, name: str, parser: MessageParser, metrics: Any):
        settings = udp.UdpInputConfig(
            type="udp",
            listen=config.listen,
            max_datagram_bytes=min(config.max_message_bytes, 65_535),
        )
        super().__init__(settings, name, metrics)
        self.parser = parser

    def _new_receiver(self, ingest: BatchBuffer, loop: asyncio.AbstractEventLoop) -> udp._Receiver:
        return _SyslogReceiver(self, ingest, loop)


# --------------------------------------------------------------------------- the input


class SyslogInput(Input):
    """A TCP server, a UDP socket, or both on the same port."""

    def __init__(
        self, config: SyslogInputConfig, name: str, metrics: UnitMetrics, clock: Clock
    ) -> None:
        super().__init__(name, metrics)
        self.config = config
        parser = MessageParser(clock, metrics)
        self.tcp = _SyslogTcp(config, name, parser, metrics) if config.protocol != "udp" else None
        self.udp = _SyslogUdp(config, name, parser, metrics) if config.protocol != "tcp" else None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``, the same for both protocols."""
        side = self.tcp or self.udp
        if side is None:  # pragma: no cover - the config allows no such input
            raise RuntimeError(f"syslog input {self.name!r} has no protocol")
        return side.address

    async def start(self, ingest: BatchBuffer) -> None:
        for side in (self.tcp, self.udp):
            if side is not None:
                side.reuse_port = self.reuse_port
        if self.tcp is not None:
            await self.tcp.start(ingest)
        if self.udp is not None:
            if self.tcp is not None and self.udp.port == 0:
                self.udp.port = self.tcp.address[1]  # port 0: UDP takes the port TCP got
            await self.udp.start(ingest)
        log.info(
            "syslog input %s (%s) listening on %s:%d",
            self.name,
            self.config.protocol,
            *self.address,
        )

    async def stop(self) -> None:
        for side in (self.tcp, self.udp):
            if side is not None:
                await side.stop()
