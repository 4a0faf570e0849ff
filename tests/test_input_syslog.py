"""The syslog input over real sockets (UDP and TCP), fed by Python's SysLogHandler,
util-linux ``logger`` and hand-written frames; plus the framing decoder's bounds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import shutil
import socket
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from logstream.buffer import BatchBuffer
from logstream.event import Batch
from logstream.inputs.syslog import MAX_LENGTH_DIGITS, FrameDecoder, SyslogInput, SyslogInputConfig
from logstream.units import BuildContext
from tests.support.inputs import (
    LOOPS,
    Runner,
    eventually,
    running,
    send_tcp,
    take,
    take_until_quiet,
)


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


def syslog_input(**settings_: Any) -> SyslogInput:
    config = SyslogInputConfig.model_validate(
        {"type": "syslog", "listen": "127.0.0.1:0", **settings_}
    )
    return config.build("syslog", BuildContext())


def octets(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


async def send_udp(address: tuple[str, int], *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, address)


# --------------------------------------------------------------------------- config


def test_config_defaults() -> None:
    config = SyslogInputConfig.model_validate({"type": "syslog"})
    assert (config.listen, config.protocol) == ("127.0.0.1:5514", "both")
    assert config.max_message_bytes == 65_536
    assert config.idle_timeout_secs is None


@pytest.mark.parametrize(
    ("settings_", "key"),
    [
        ({"protocol": "sctp"}, "protocol"),
        ({"listen": "nowhere"}, "listen"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
        ({"framing": "octet"}, "framing"),
    ],
)
def test_bad_settings_are_rejected_naming_the_key(settings_: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        SyslogInputConfig.model_validate({"type": "syslog", **settings_})


# --------------------------------------------------------------------------- real clients


def test_python_sysloghandler_over_udp_and_tcp_gives_facility_severity_and_level(
    run: Runner,
) -> None:
    async def scenario() -> Batch:
        unit = syslog_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            events: Batch = []
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                handler = logging.handlers.SysLogHandler(
                    address=unit.address,
                    facility=logging.handlers.SysLogHandler.LOG_LOCAL3,
                    socktype=kind,
                )
                handler.setFormatter(logging.Formatter("myapp[42]: %(message)s"))
                logger = logging.Logger("t")
                logger.addHandler(handler)
                await asyncio.to_thread(logger.error, "disk %s", "full")
                await asyncio.to_thread(logger.warning, "warm")
                handler.close()
                events += await take(ingest, 2)
            return events

    events = run(scenario())
    assert [e["message"] for e in events] == ["disk full", "warm"] * 2
    error = events[0]
    assert error["syslog_facility"] == 19
    assert error["syslog_severity"] == 3
    assert error["level"] == "ERROR"
    assert (error["program"], error["pid"], error["host"]) == ("myapp", 42, "127.0.0.1")
    assert error["@timestamp"].endswith("Z")
    assert events[1]["level"] == "WARNING"
    assert all("tags" not in e for e in events)


@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger not installed")
@pytest.mark.parametrize(
    "flags",
    [
        ["--udp", "--rfc3164"],
        ["--udp", "--rfc5424"],
        ["--tcp", "--rfc3164"],
        ["--tcp", "--rfc5424", "--octet-count"],
        ["--tcp", "--rfc3164", "--octet-count"],
    ],
)
def test_util_linux_logger_messages_are_parsed(flags: list[str]) -> None:
    async def scenario() -> Batch:
        unit = syslog_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            host, port = unit.address
            command = ["logger", "--server", host, "--port", str(port), *flags]
            command += ["-p", "daemon.warning", "-t", "backup", "--id=77", "job done"]
            sd = ["--sd-id", "meta@32473", "--sd-param", 'job="nightly"']
            await asyncio.to_thread(
                subprocess.run,
                command[:-1] + (sd if "--rfc5424" in flags else []) + command[-1:],
                check=True,
                timeout=5,
            )
            return await take(ingest, 1)

    [event] = Runner("uvloop")(scenario())
    assert event["message"] == "job done"
    assert (event["syslog_facility"], event["syslog_severity"]) == (3, 4)
    assert event["level"] == "WARNING"
    assert (event["program"], event["pid"]) == ("backup", 77)
    assert event["@timestamp"].endswith("Z")
    assert "tags" not in event
    if "--rfc5424" in flags:
        assert event["format"] == "rfc5424"
        assert event["syslog_sd"]["meta@32473"] == {"job": "nightly"}


# --------------------------------------------------------------------------- framing


RFC5424 = (
    b"<165>1 2003-10-11T22:14:15.003+02:00 mymachine.example.com evntslog 17 ID47 "
    b'[exampleSDID@32473 iut="3" eventSource="App\\"lication"][meta x="1"] An app event'
)
RFC3164 = b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed"


def test_octet_counted_frames_split_anywhere_and_mixed_with_newline_frames(run: Runner) -> None:
    data = octets(RFC5424) + octets(RFC3164) + b"<13>plain line\n" + octets(b"<14>last")

    async def scenario() -> Batch:
        unit = syslog_input(protocol="tcp")
        async with running(unit, BatchBuffer(100)) as ingest:
            _, writer = await asyncio.open_connection(*unit.address)
            for start in range(0, len(data), 7):
                writer.write(data[start : start + 7])
                await writer.drain()
            writer.close()
            return await take(ingest, 4)

    rfc5424, rfc3164, plain, last = run(scenario())
    assert rfc5424["@timestamp"] == "2003-10-11T20:14:15.003Z"
    assert rfc5424["syslog_sd"] == {
        "exampleSDID@32473": {"iut": "3", "eventSource": 'App"lication'},
        "meta": {"x": "1"},
    }
    assert (rfc5424["host"], rfc5424["program"], rfc5424["pid"]) == (
        "mymachine.example.com",
        "evntslog",
        17,
    )
    assert (rfc5424["syslog_msgid"], rfc5424["message"]) == ("ID47", "An app event")
    assert (rfc5424["syslog_facility"], rfc5424["syslog_severity"]) == (20, 5)
    assert rfc5424["level"] == "NOTICE"
    assert (rfc3164["program"], rfc3164["pid"], rfc3164["level"]) == ("su", 230, "CRITICAL")
    assert rfc3164["message"] == "'su root' failed"
    assert (plain["message"], last["message"]) == ("plain line", "last")


def test_a_huge_declared_length_is_cut_skipped_and_counted_and_the_next_frame_arrives(
    run: Runner,
) -> None:
    body = b"<13>" + b"z" * 5000

    async def scenario() -> tuple[Batch, SyslogInput]:
        unit = syslog_input(protocol="tcp", max_message_bytes=1000)
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, octets(body) + octets(b"<13>after"))
            # A length of 9 999 999 999 declared and never sent: nothing allocated.
            _, writer = await asyncio.open_connection(*unit.address)
            writer.write(b"9999999999 <13>" + b"q" * 3000)
            await writer.drain()
            events = await take(ingest, 3)
            writer.close()
            await writer.wait_closed()
            events += await take_until_quiet(ingest)
            return events, unit

    events, unit = run(scenario())
    cut, after, huge = events
    assert cut["message"] == body[:1000].decode()
    assert cut["tags"] == ["_linetoolong", "_syslogparsefailure"]
    assert after["message"] == "after"
    assert huge["message"] == "<13>" + "q" * 996
    assert all(len(e["message"].encode()) <= 1000 for e in events)
    assert unit.metrics.decode_issues == {"line_too_long": 2}


def test_garbage_and_invalid_utf8_are_tagged_and_counted_and_the_connection_goes_on(
    run: Runner,
) -> None:
    data = b"hello world\n<999>too big\n\xff\xfe<13>bad\n<13>1 not-a-date h a - - - x\n<14>ok\n"

    async def scenario() -> tuple[Batch, SyslogInput]:
        unit = syslog_input(protocol="tcp")
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, data)
            return await take(ingest, 5), unit

    events, unit = run(scenario())
    assert [e.get("tags") for e in events] == [
        ["_syslogparsefailure"],
        ["_syslogparsefailure"],
        ["_syslogparsefailure", "_utf8error"],
        ["_syslogparsefailure"],
        None,
    ]
    assert events[0]["message"] == "hello world"
    assert events[0]["host"] == "127.0.0.1"
    assert events[4]["message"] == "ok"
    assert unit.metrics.decode_issues == {"unparsed": 4, "invalid_utf8": 1}


def test_udp_garbage_empty_and_oversized_datagrams_never_stop_the_socket(run: Runner) -> None:
    async def scenario() -> tuple[Batch, SyslogInput]:
        unit = syslog_input(protocol="udp", max_message_bytes=200)
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_udp(unit.address, b"", b"\x00\x01garbage", b"<13>" + b"w" * 500, RFC5424)
            return await take(ingest, 3), unit

    (garbage, cut, good), unit = run(scenario())
    assert garbage["tags"] == ["_syslogparsefailure"]
    assert cut["tags"] == ["_linetoolong", "_syslogparsefailure"]
    assert len(cut["message"]) == 200
    assert good["program"] == "evntslog"
    assert unit.metrics.decode_issues == {"unparsed": 1, "line_too_long": 1}


def test_a_client_disconnecting_mid_frame_delivers_its_part_and_others_are_unaffected(
    run: Runner,
) -> None:
    async def scenario() -> tuple[Batch, SyslogInput]:
        unit = syslog_input(protocol="tcp")
        async with running(unit, BatchBuffer(100)) as ingest:
            _, good = await asyncio.open_connection(*unit.address)
            good.write(octets(b"<13>one"))
            await send_tcp(unit.address, b"50 <13>cut sho")
            good.write(octets(b"<13>two"))
            await good.drain()
            good.close()
            return await take_until_quiet(ingest), unit

    events, unit = run(scenario())
    assert sorted(e["message"] for e in events) == ["cut sho", "one", "two"]
    assert unit.metrics.decode_issues["truncated_line"] == 1


def test_max_connections_and_idle_timeout_come_from_the_tcp_input(run: Runner) -> None:
    async def scenario() -> SyslogInput:
        unit = syslog_input(protocol="tcp", max_connections=1, idle_timeout_secs=0.1)
        async with running(unit, BatchBuffer(100)):
            reader, _ = await asyncio.open_connection(*unit.address)
            await eventually(lambda: unit.metrics.connections == 1)
            refused_reader, _ = await asyncio.open_connection(*unit.address)
            with contextlib.suppress(ConnectionResetError):  # closed at once (RST or FIN)
                assert await asyncio.wait_for(refused_reader.read(), 1) == b""
            assert await asyncio.wait_for(reader.read(), 1) == b""  # idle, closed by us
            await eventually(lambda: unit.metrics.connections == 0)
        return unit

    unit = run(scenario())
    assert unit.metrics.dropped == {"too_many_connections": 1}


# --------------------------------------------------------------------------- decoder


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.binary(max_size=200)
        | st.sampled_from([b"\n", b"\x00", b" ", b"12", b"99999999999 ", b"5 ", b"<13>"]),
        max_size=40,
    ),
    limit=st.integers(min_value=16, max_value=64),
)
def test_the_frame_decoder_never_raises_and_never_holds_more_than_its_bound(
    chunks: list[bytes], limit: int
) -> None:
    decoder = FrameDecoder(limit)
    for chunk in chunks:
        for message, _ in decoder.feed(chunk):
            assert len(message) <= limit
        assert decoder.buffered <= limit + MAX_LENGTH_DIGITS
    partial = decoder.finish()
    assert partial is None or len(partial) <= limit + MAX_LENGTH_DIGITS
    assert decoder.buffered == 0


@given(messages=st.lists(st.binary(min_size=1, max_size=80), max_size=10))
def test_octet_counted_frames_round_trip_through_any_chunking(messages: list[bytes]) -> None:
    data = b"".join(octets(m) for m in messages)
    decoder = FrameDecoder(100)
    out = [m for start in range(0, len(data), 3) for m in decoder.feed(data[start : start + 3])]
    assert out == [(m, False) for m in messages]


def test_a_cut_message_never_ends_in_half_a_utf8_character(run: Runner) -> None:
    async def scenario() -> Batch:
        unit = syslog_input(protocol="udp", max_message_bytes=21)
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_udp(unit.address, b"<13>" + "é".encode() * 20)
            return await take(ingest, 1)

    [event] = run(scenario())
    assert event["message"] == "<13>" + "é" * 8
    assert event["tags"] == ["_linetoolong", "_syslogparsefailure"]
