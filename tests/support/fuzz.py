"""Fuzz targets, one per decoder that reads bytes from outside.

Each target takes arbitrary bytes and feeds them to the decoder the way the network
would (the first byte picks where the stream is cut into chunks, or the content
type). A target raises only when the decoder breaks its contract: an exception
escaping a decoder that promises never to raise, or a bound it promises not
exceeded. ``tests/test_fuzz.py`` runs them briefly with hypothesis;
``benchmarks/fuzz.py`` runs them coverage-guided with atheris for as long as asked.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Callable

import lz4.frame
import orjson
from aiohttp import web

from logstream.buffer import BatchBuffer
from logstream.clock import ManualClock, SystemClock
from logstream.inputs.beats import FrameDecoder as BeatsDecoder
from logstream.inputs.http import HttpInputConfig
from logstream.inputs.syslog import FrameDecoder as SyslogDecoder
from logstream.inputs.syslog import MessageParser
from logstream.inputs.tcp import TcpInputConfig, _Connection
from logstream.metrics import UnitMetrics
from logstream.parsers import Parser, build_parsers
from logstream.tail import Printer, TailOptions
from logstream.units import BuildContext

Target = Callable[[bytes], None]


def _chunks(data: bytes) -> list[bytes]:
    """``data`` after its first byte, cut into chunks of a size the first byte picks."""
    if not data:
        return []
    size = data[0] % 17 + 1
    body = data[1:]
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


# --------------------------------------------------------------------------- tcp json_lines

_TCP_LIMIT = 256


def json_lines(data: bytes) -> None:
    """The tcp input's line splitting and JSON decoding, chunk by chunk."""
    unit = TcpInputConfig(type="tcp", listen="127.0.0.1:0", max_line_bytes=_TCP_LIMIT).build(
        "tcp", BuildContext()
    )
    ingest = BatchBuffer(1_000_000)
    connection = _Connection(unit, ingest)
    for chunk in _chunks(data):
        connection._process(chunk)
        assert connection._partial_len <= _TCP_LIMIT, "held more than max_line_bytes"
    events = ingest.get_nowait(1_000_000) or []
    assert all(isinstance(event, dict) and "host" in event for event in events)
    complete = data[1:].count(b"\n") + 1
    assert len(events) <= complete, (len(events), complete)


# --------------------------------------------------------------------------- beats

_BEATS_MAX = 4096


def lumberjack(data: bytes) -> None:
    """Lumberjack v2 frames (window, JSON, data, compressed), chunk by chunk."""
    decoder = BeatsDecoder(_BEATS_MAX)
    for chunk in _chunks(data):
        decoded = decoder.feed(chunk)
        for item in decoded.items:
            assert item[0] in ("W", "E"), item
            if item[0] == "E":
                assert isinstance(item[2], dict)
        assert decoder.held <= _BEATS_MAX + 10, "held more than one frame"


# --------------------------------------------------------------------------- syslog

_SYSLOG_LIMIT = 512


def syslog_framing(data: bytes) -> None:
    """RFC 6587 framing (octet counting, newline, NUL) and then message parsing."""
    decoder = SyslogDecoder(_SYSLOG_LIMIT)
    parser = MessageParser(SystemClock(), UnitMetrics("syslog", "input"))
    for chunk in _chunks(data):
        for message, cut in decoder.feed(chunk):
            assert len(message) <= _SYSLOG_LIMIT, "a message longer than the limit"
            event = parser.parse(message, "127.0.0.1", cut)
            assert event is None or isinstance(event, dict)
        assert decoder.buffered <= _SYSLOG_LIMIT + 20, "held more than the limit"


# --------------------------------------------------------------------------- http

_HTTP_MAX = 65_536


def http_body(data: bytes) -> None:
    """An http input body: JSON, JSON array or NDJSON, plain or gzip/deflate."""
    unit = HttpInputConfig(
        type="http", listen="127.0.0.1:0", max_decompressed_bytes=_HTTP_MAX
    ).build("http", BuildContext())
    if not data:
        return
    mode, body = data[0] % 6, data[1:]
    if mode in (2, 3):  # a valid gzip of the fuzzed body, or the fuzzed bytes as gzip
        body = gzip.compress(body) if mode == 2 else body
        inflated = unit._inflate(body, 31)
    elif mode == 4:
        inflated = unit._inflate(body, 15)
    elif mode == 5:
        inflated = unit._inflate(zlib.compress(body), 15)
    else:
        inflated = body
    if isinstance(inflated, web.Response):
        assert inflated.status in (400, 413), inflated.status
        return
    assert len(inflated) <= _HTTP_MAX
    batch = unit._decode(inflated, ndjson=mode == 1)
    assert batch is None or all(isinstance(event, dict) for event in batch)


# --------------------------------------------------------------------------- tail

_CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-ndjson",
    "application/x-lz4",
    "application/zstd",
    "text/plain; charset=utf-8",
]


def mqtt_envelope(data: bytes) -> None:
    """``logstream tail`` decoding an MQTT message: any encoding, any content type."""
    if not data:
        return
    choice, payload = data[0], data[1:]
    if choice & 0x80:  # wrap the fuzzed bytes in a valid lz4 frame: reach the inner decoder
        payload = lz4.frame.compress(payload)
    content_type = _CONTENT_TYPES[choice % len(_CONTENT_TYPES)]
    properties = (
        {} if choice & 0x40 else {"encoding": ["json", "ndjson", "lz4", "zstd"][choice % 4]}
    )
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(TailOptions(topics=["#"], url="mqtt://127.0.0.1:1"), out, err)
    printer.message("logs/a", payload, content_type, properties)  # never raises
    assert printer.events <= out.getvalue().count("\n")


# --------------------------------------------------------------------------- parsers

_PAIRS: list[tuple[Parser, Parser]] = []


def _parser_pairs() -> list[tuple[Parser, Parser]]:
    """(pure-Python, compiled) parser of each format whose compiled fast path is built."""
    if not _PAIRS:
        fast = build_parsers(ManualClock(wall_start=1_795_000_000.0))[1]
        before = os.environ.get("LOGSTREAM_PURE")
        os.environ["LOGSTREAM_PURE"] = "1"
        try:
            pure = build_parsers(ManualClock(wall_start=1_795_000_000.0))[1]
        finally:
            if before is None:
                del os.environ["LOGSTREAM_PURE"]
            else:
                os.environ["LOGSTREAM_PURE"] = before
        for name, parser in fast.items():
            if type(parser).parse is not getattr(parser.parse, "__func__", None):
                _PAIRS.append((pure[name], parser))  # a compiled parse stands in
    return _PAIRS


def parse_lines(data: bytes) -> None:
    """Every compiled parser reads each line of ``data`` as its pure-Python twin
    does (the differential oracle), and neither raises."""
    text = data.decode("utf-8", "replace")
    for line in text.split("\n")[:64]:
        for pure, fast in _parser_pairs():
            want = pure.parse(line, {"message": line})
            got = fast.parse(line, {"message": line})
            assert got == want, f"{pure.name}: {line!r}: {got!r} != {want!r}"


TARGETS: dict[str, Target] = {
    "json_lines": json_lines,
    "lumberjack": lumberjack,
    "syslog_framing": syslog_framing,
    "http_body": http_body,
    "mqtt_envelope": mqtt_envelope,
    "parse_lines": parse_lines,
}


def _lumberjack_seed() -> bytes:
    event = orjson.dumps({"message": "hello", "@metadata": {"beat": "filebeat"}})
    json_frame = b"2J" + (1).to_bytes(4, "big") + len(event).to_bytes(4, "big") + event
    window = b"2W" + (1).to_bytes(4, "big")
    inner = window + json_frame
    compressed = zlib.compress(inner)
    return b"\x05" + window + json_frame + b"2C" + len(compressed).to_bytes(4, "big") + compressed


# Valid inputs to start from: coverage-guided fuzzing mutates these.
SEEDS: dict[str, list[bytes]] = {
    "parse_lines": [
        b"2013-09-27 18:22:35.392 6602 AUDIT cinder.api [req-1 u p] msg fn /a.py:3\n"
        b"<13>Jun  9 15:41:36 host tag[12]: warning: x\n"
        b"Mar 28 12:20:44.172534 node cinder-api[85]: INFO cinder.api [req-1 a b] GET\n",
        b'10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 500 12 "-" "ua"\n'
        b"2014-03-17 16:11:24.173 | + cmd\n+ bare\n"
        b"2022-02-06 10:52:00,874 p=41 u=root n=ansible |  ok: [h] => {\n",
        b"[Sun Dec 04 04:47:44 2005] [error] [client 1.2.3.4] x\n"
        b"2016/09/01 12:00:00 [error] 1234#0: *1 y\n",
    ],
    "json_lines": [
        b'\x03{"message": "a", "level": "INFO"}\n{"@message": "v0", "@fields": {"x": 1}}\n',
        b"\x10not json\n[1,2]\n\xff\xfe\n" + b"x" * 300 + b"\n",
    ],
    "lumberjack": [_lumberjack_seed()],
    "syslog_framing": [
        b"\x0433 <13>Nov 24 10:00:00 host app: hi\n",
        b'\x08<165>1 2026-11-24T10:00:00Z host app 1 ID47 [ex@1 a="b"] msg\x00<13>x\n',
    ],
    "http_body": [
        b'\x00{"message": "one"}',
        b'\x01{"a":1}\n{"b":2}\n',
        b'\x02[{"message": "gz"}, 3]',
    ],
    "mqtt_envelope": [
        b'\x41[{"message": "m", "level": "ERROR"}]',
        b'\x82{"message": "n"}\n{"message": "o"}\n',
    ],
}
