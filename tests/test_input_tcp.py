"""The tcp input driven directly over real sockets, with a real BatchBuffer as ingest,
on uvloop (production) and on asyncio's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from logstream.buffer import BatchBuffer
from logstream.event import Batch
from logstream.inputs.tcp import TcpInput, TcpInputConfig, _Connection
from logstream.units import BuildContext
from tests.support.inputs import (
    LOOPS,
    Runner,
    eventually,
    lines,
    numbered,
    running,
    send_tcp,
    take,
    take_until_quiet,
)

MIB = 1024 * 1024


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


def tcp_input(**settings: Any) -> TcpInput:
    config = TcpInputConfig.model_validate({"type": "tcp", "listen": "127.0.0.1:0", **settings})
    return config.build("tcp", BuildContext())


def seqs(events: Batch) -> list[int]:
    return [event["seq"] for event in events]


# --------------------------------------------------------------------------- config


def test_config_defaults_match_python_logstash() -> None:
    config = TcpInputConfig.model_validate({"type": "tcp"})
    assert config.listen == "127.0.0.1:5959"
    assert config.max_line_bytes == MIB
    assert config.max_connections == 10_000
    assert config.idle_timeout_secs is None


@pytest.mark.parametrize(
    ("settings", "key", "value"),
    [
        ({"listen": "nowhere"}, "listen", "nowhere"),
        ({"listen": "127.0.0.1:http"}, "listen", "127.0.0.1:http"),
        ({"listen": "127.0.0.1:70000"}, "listen", "70000"),
        ({"max_line_bytes": 0}, "max_line_bytes", "0"),
        ({"max_connections": 0}, "max_connections", "0"),
        ({"idle_timeout_secs": 0}, "idle_timeout_secs", "0"),
        ({"codec": "json"}, "codec", "json"),
    ],
)
def test_bad_settings_are_rejected_naming_the_key_and_the_value(
    settings: dict[str, Any], key: str, value: str
) -> None:
    with pytest.raises(ValidationError) as error:
        TcpInputConfig.model_validate({"type": "tcp", **settings})
    assert key in str(error.value)
    assert value in str(error.value)


def test_start_raises_oserror_when_the_port_is_taken(run: Runner) -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            unit = tcp_input(listen=f"127.0.0.1:{taken.getsockname()[1]}")
            with pytest.raises(OSError, match="in use"):
                await unit.start(BatchBuffer(10))
            await unit.stop()

    run(scenario())


def test_stop_without_start_does_not_raise(run: Runner) -> None:
    run(tcp_input().stop())


# --------------------------------------------------------------------------- delivery


def test_one_connection_delivers_its_events_in_order_and_counts_them(run: Runner) -> None:
    data = lines(*numbered(5000))

    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100_000)) as ingest:
            await send_tcp(unit.address, data)
            events = await take(ingest, 5000)
            assert await take_until_quiet(ingest, 0.1) == []
        return events, unit

    events, unit = run(scenario())
    assert seqs(events) == list(range(5000))
    assert events[0] == numbered(1)[0]
    assert unit.metrics.events_in == 5000
    assert unit.metrics.bytes_in == len(data)
    assert unit.metrics.connections == 0
    assert dict(unit.metrics.decode_issues) == {}


def test_fifty_concurrent_connections_are_all_delivered_each_in_order(run: Runner) -> None:
    async def scenario() -> Batch:
        unit = tcp_input()
        async with running(unit, BatchBuffer(1_000_000)) as ingest:
            sends = [
                send_tcp(unit.address, lines(*numbered(400, client * 1000, client=client)))
                for client in range(50)
            ]
            taking = asyncio.create_task(take(ingest, 50 * 400))
            await asyncio.gather(*sends)
            return await taking

    events = run(scenario())
    for client in range(50):
        mine = [event["seq"] for event in events if event["client"] == client]
        assert mine == list(range(client * 1000, client * 1000 + 400))


def test_a_line_written_in_many_small_pieces_is_reassembled(run: Runner) -> None:
    line = lines({"seq": 1, "message": "x" * 300})

    async def scenario() -> Batch:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            _, writer = await asyncio.open_connection(*unit.address)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(line), 16):
                writer.write(line[start : start + 16])
                await writer.drain()
                await asyncio.sleep(0.002)
            events = await take(ingest, 1)
            writer.close()
            await writer.wait_closed()
            return events

    [event] = run(scenario())
    assert event["seq"] == 1
    assert event["message"] == "x" * 300
    assert "tags" not in event


def test_v0_and_v1_events_are_normalised_to_the_flat_form(run: Runner) -> None:
    v0 = {
        "@timestamp": "2026-11-24T10:00:00.000Z",
        "@message": "disk full",
        "@source": "python-logstash://db-1//srv/app.py",
        "@source_host": "db-1",
        "@source_path": "/srv/app.py",
        "@tags": ["prod"],
        "@type": "python-logstash",
        "@fields": {"levelname": "ERROR", "logger": "app.db", "user": "alice"},
    }
    v1 = {
        "@timestamp": "2026-11-24T10:00:01.000Z",
        "@version": "1",
        "message": "disk ok",
        "host": "db-2",
        "path": "/srv/app.py",
        "tags": [],
        "type": "python-logstash",
        "level": "INFO",
        "logger_name": "app.db",
        "user": "bob",
    }

    async def scenario() -> Batch:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, lines(v0, v1))
            return await take(ingest, 2)

    flat0, flat1 = run(scenario())
    assert flat0 == {
        "@timestamp": "2026-11-24T10:00:00.000Z",
        "@version": "1",
        "message": "disk full",
        "source": "python-logstash://db-1//srv/app.py",
        "host": "db-1",
        "path": "/srv/app.py",
        "tags": ["prod"],
        "type": "python-logstash",
        "level": "ERROR",
        "logger_name": "app.db",
        "user": "alice",
    }
    assert flat1 == v1


def test_an_event_without_host_gets_the_client_address_and_one_with_host_keeps_it(
    run: Runner,
) -> None:
    async def scenario() -> Batch:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, lines({"n": 1}, {"n": 2, "host": "web-9"}))
            return await take(ingest, 2)

    no_host, with_host = run(scenario())
    assert no_host["host"] == "127.0.0.1"
    assert no_host["@version"] == "1"
    assert "@timestamp" in no_host
    assert with_host["host"] == "web-9"


def test_crlf_line_endings_and_blank_lines_are_accepted(run: Runner) -> None:
    data = b'{"seq": 0}\r\n\r\n{"seq": 1}\r\n\n   \n{"seq": 2}\r\n'

    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, data)
            return await take_until_quiet(ingest), unit

    events, unit = run(scenario())
    assert seqs(events) == [0, 1, 2]
    assert all("tags" not in event for event in events)
    assert dict(unit.metrics.decode_issues) == {}


# --------------------------------------------------------------------------- bad input


def test_lines_that_are_not_json_objects_become_tagged_messages_and_are_counted(
    run: Runner,
) -> None:
    data = b'hello world\r\n42\n"text"\n[1, 2]\nnull\n{"seq": 1}\n'

    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, data)
            return await take(ingest, 6), unit

    events, unit = run(scenario())
    assert [event["message"] for event in events[:5]] == [
        "hello world",
        "42",
        '"text"',
        "[1, 2]",
        "null",
    ]
    for event in events[:5]:
        assert event["tags"] == ["_jsonparsefailure"]
        assert event["host"] == "127.0.0.1"
        assert event["@version"] == "1"
    assert events[5]["seq"] == 1  # the connection goes on
    assert unit.metrics.decode_issues == {"json_parse_failure": 5}
    assert unit.metrics.events_in == 6


def test_invalid_utf8_is_replaced_and_tagged(run: Runner) -> None:
    data = b'{"message": "caf\xe9"}\n\xff\xfe not json\n'

    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, data)
            return await take(ingest, 2), unit

    (json_event, text_event), unit = run(scenario())
    assert json_event["message"] == "caf\ufffd"
    assert json_event["tags"] == ["_utf8error"]
    assert text_event["message"] == "\ufffd\ufffd not json"
    assert text_event["tags"] == ["_utf8error", "_jsonparsefailure"]
    assert unit.metrics.decode_issues == {"invalid_utf8": 2}


def test_a_line_over_the_limit_is_cut_tagged_and_counted_and_the_next_line_arrives(
    run: Runner,
) -> None:
    long_line = orjson.dumps({"message": "y" * 5000}) + b"\n"

    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input(max_line_bytes=1000)
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, lines({"seq": 0}) + long_line + lines({"seq": 1}))
            return await take(ingest, 3), unit

    (first, cut, last), unit = run(scenario())
    assert (first["seq"], last["seq"]) == (0, 1)
    assert cut["message"] == long_line[:1000].decode()
    assert cut["tags"] == ["_linetoolong"]
    assert cut["host"] == "127.0.0.1"
    assert unit.metrics.decode_issues == {"line_too_long": 1}


def test_a_cut_never_splits_a_utf8_character() -> None:
    from logstream.inputs.tcp import cut_line

    text = '{"m": "x' + "é" * 5  # "é" is 2 bytes; byte 10 is the middle of the second one
    cut = cut_line(text.encode(), 10)
    assert cut.decode() == '{"m": "xé'
    assert cut_line(b"abc", 10) == b"abc"
    assert cut_line("€€".encode(), 4) == "€".encode()


def test_20_mib_without_newline_is_cut_at_the_limit_with_bounded_memory(run: Runner) -> None:
    """Memory stays bounded by max_line_bytes: the input never holds the whole line."""
    flood = b"x" * (20 * MIB)

    def send(address: tuple[str, int]) -> None:
        with socket.create_connection(address) as client:
            client.sendall(memoryview(flood))
            client.sendall(b'\n{"seq": 1}\n')

    async def scenario() -> tuple[Batch, int, TcpInput]:
        unit = tcp_input(max_line_bytes=MIB)
        async with running(unit, BatchBuffer(100)) as ingest:
            tracemalloc.start()
            try:
                sending = asyncio.create_task(asyncio.to_thread(send, unit.address))
                events = await take(ingest, 2)
                await sending
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        return events, peak, unit

    (cut, good), peak, unit = run(scenario(), timeout_secs=60)
    assert cut["message"] == "x" * MIB
    assert cut["tags"] == ["_linetoolong"]
    assert good["seq"] == 1
    assert unit.metrics.decode_issues["line_too_long"] == 1
    assert unit.metrics.bytes_in == len(flood) + 12
    # Holding the line would take 20 MiB and more; bounded, it is a few times the limit.
    assert peak < 6 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"


def test_a_client_disconnecting_mid_line_has_its_partial_line_delivered_and_counted(
    run: Runner,
) -> None:
    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, b'{"seq": 0}\n{"seq": 1, "mess')
            await send_tcp(unit.address, b'{"seq": 2}')
            return await take(ingest, 3), unit

    (whole, broken, unterminated), unit = run(scenario())
    assert whole == {**whole, "seq": 0}
    assert "tags" not in whole
    assert broken["message"] == '{"seq": 1, "mess'
    assert broken["tags"] == ["_jsonparsefailure"]
    assert unterminated["seq"] == 2
    assert "tags" not in unterminated
    assert unit.metrics.decode_issues == {"truncated_line": 2, "json_parse_failure": 1}


def test_one_bad_client_does_not_affect_another(run: Runner) -> None:
    """Garbage, an oversized line and an abrupt reset on one connection; the other's
    events all arrive, in order."""
    good = lines(*numbered(3000))

    async def bad_client(address: tuple[str, int]) -> None:
        _, writer = await asyncio.open_connection(*address)
        writer.write(b"\x00\xff garbage {{{\n" + b"z" * 50_000 + b'\n{"half": ')
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # RST, not FIN

    async def scenario() -> Batch:
        unit = tcp_input(max_line_bytes=10_000)
        async with running(unit, BatchBuffer(100_000)) as ingest:
            await asyncio.gather(bad_client(unit.address), send_tcp(unit.address, good))
            return await take_until_quiet(ingest)

    events = run(scenario())
    assert seqs([event for event in events if "seq" in event]) == list(range(3000))


# --------------------------------------------------------------------------- connections


def test_2000_idle_connections_do_not_hold_up_another_clients_events(run: Runner) -> None:
    async def scenario() -> tuple[Batch, int]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(100_000)) as ingest:
            idle = [await asyncio.open_connection(*unit.address) for _ in range(2000)]
            await eventually(lambda: unit.metrics.connections == 2000)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await send_tcp(unit.address, lines(*numbered(20_000)))
            events = await take(ingest, 20_000)
            elapsed = loop.time() - started
            open_now = unit.metrics.connections
            for _, writer in idle:
                writer.close()
            assert elapsed < 5, f"20000 events took {elapsed:.1f}s"
        return events, open_now

    events, open_now = run(scenario(), timeout_secs=60)
    assert seqs(events) == list(range(20_000))
    assert open_now >= 2000  # the idle clients are all still open


def test_connections_beyond_max_connections_are_refused_and_counted(run: Runner) -> None:
    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input(max_connections=2)
        async with running(unit, BatchBuffer(100)) as ingest:
            first = await asyncio.open_connection(*unit.address)
            second = await asyncio.open_connection(*unit.address)
            reader, writer = await asyncio.open_connection(*unit.address)
            with contextlib.suppress(ConnectionResetError):  # closed at once (RST or FIN)
                assert await reader.read() == b""
            writer.close()
            assert unit.metrics.connections == 2
            for _, w in (first, second):
                w.write(lines({"seq": 1}))
                w.close()
                await w.wait_closed()
            events = await take(ingest, 2)
            await eventually(lambda: unit.metrics.connections == 0)
            await send_tcp(unit.address, lines({"seq": 2}))  # room again
            events += await take(ingest, 1)
        return events, unit

    events, unit = run(scenario())
    assert seqs(events) == [1, 1, 2]
    assert unit.metrics.dropped == {"too_many_connections": 1}


def test_idle_timeout_closes_silent_clients_only_and_delivers_their_partial_line(
    run: Runner,
) -> None:
    async def scenario() -> tuple[Batch, TcpInput]:
        unit = tcp_input(idle_timeout_secs=0.2)
        async with running(unit, BatchBuffer(100)) as ingest:
            silent_reader, silent = await asyncio.open_connection(*unit.address)
            silent.write(b'{"who": "silent"')
            _, chatty = await asyncio.open_connection(*unit.address)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for n in range(12):  # 0.6 s of a line every 0.05 s
                chatty.write(lines({"who": "chatty", "seq": n}))
                await asyncio.sleep(0.05)
            assert await asyncio.wait_for(silent_reader.read(), 1) == b""  # closed by us
            assert loop.time() - started < 1
            assert not chatty.is_closing()
            assert unit.metrics.connections == 1
            chatty.close()
            silent.close()
            return await take_until_quiet(ingest), unit

    events, unit = run(scenario())
    cut = [event for event in events if event.get("who") != "chatty"]
    assert cut == [{**cut[0], "message": '{"who": "silent"', "tags": ["_jsonparsefailure"]}]
    assert seqs([event for event in events if event.get("who") == "chatty"]) == list(range(12))
    assert unit.metrics.decode_issues["truncated_line"] == 1


# --------------------------------------------------------------------------- flow control


def test_a_full_ingest_pauses_reading_until_drained_and_nothing_is_lost(run: Runner) -> None:
    """With nobody draining a small ingest buffer, the sender's socket blocks (the input
    stopped reading, memory stays bounded); once drained, reading resumes and every
    event arrives in order."""
    pad = "p" * 1000

    def line(seq: int) -> bytes:
        return orjson.dumps({"seq": seq, "pad": pad}) + b"\n"

    async def scenario() -> tuple[list[int], int, int, int]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(1000)) as ingest:
            loop = asyncio.get_running_loop()
            client = socket.create_connection(unit.address)
            client.setblocking(False)
            seq = 0
            pending = b""

            async def send_until_blocked(limit_seq: int | None) -> None:
                """Send lines; return once blocked for 0.5 s, or once limit_seq is sent."""
                nonlocal seq, pending
                blocked_since: float | None = None
                while True:
                    if not pending:
                        if limit_seq is not None and seq >= limit_seq:
                            return
                        assert seq < 100_000, "sent 100 MiB and the socket never blocked"
                        pending = b"".join(line(n) for n in range(seq, seq + 64))
                        seq += 64
                    try:
                        sent = client.send(pending)
                    except BlockingIOError:
                        now = loop.time()
                        blocked_since = blocked_since or now
                        if limit_seq is None and now - blocked_since > 0.5:
                            return
                        await asyncio.sleep(0.01)
                        continue
                    blocked_since = None
                    pending = pending[sent:]
                    await asyncio.sleep(0)

            await send_until_blocked(None)
            held = len(ingest)
            await asyncio.sleep(0.2)
            assert len(ingest) == held, "the input kept reading into a full buffer"
            # Full, and over the limit by at most the chunk read last.
            assert 1000 <= held < 1000 + 300
            blocked_at = seq

            async def drain() -> list[int]:
                got: list[int] = []
                while True:
                    batch = await ingest.get(500)
                    assert batch is not None
                    got += seqs(batch)
                    if got[-1] >= total - 1:
                        return got

            total = blocked_at + 32 * 64  # whole rounds of 64 lines
            draining = asyncio.create_task(drain())
            await send_until_blocked(total)
            while pending:
                try:
                    pending = pending[client.send(pending) :]
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            got = await draining
            client.close()
        return got, blocked_at, total, unit.metrics.events_in

    got, blocked_at, total, events_in = run(scenario(), timeout_secs=60)
    assert blocked_at > 1300  # more than the buffer and one chunk were sent before blocking
    assert got == list(range(total))
    assert events_in == total


def test_a_full_ingest_stops_every_client_within_one_chunk_of_the_limit(run: Runner) -> None:
    """Clients that send while another one filled ingest keep their chunk as bytes and
    pause: ingest overshoots its limit by one chunk at most, however many clients."""
    pad = "p" * 1000
    clients = 8
    per_client = 3000

    def send(client: int, address: tuple[str, int]) -> None:
        data = b"".join(
            orjson.dumps({"client": client, "seq": n, "pad": pad}) + b"\n"
            for n in range(per_client)
        )
        with socket.create_connection(address) as sock:
            sock.sendall(data)

    async def scenario() -> tuple[int, Batch]:
        unit = tcp_input()
        async with running(unit, BatchBuffer(1000)) as ingest:
            sending = [
                asyncio.create_task(asyncio.to_thread(send, client, unit.address))
                for client in range(clients)
            ]
            await eventually(lambda: unit.metrics.connections == clients)
            level = -1
            while level != len(ingest):  # until nothing more is read
                level = len(ingest)
                await asyncio.sleep(0.2)
            events = await take(ingest, clients * per_client)
            await asyncio.gather(*sending)
        return level, events

    level, events = run(scenario(), timeout_secs=60)
    assert 1000 <= level < 1000 + 300  # a 256 KiB chunk holds about 250 of these lines
    for client in range(clients):
        mine = [event["seq"] for event in events if event["client"] == client]
        assert mine == list(range(per_client))


# --------------------------------------------------------------------------- stop


def test_stop_delivers_partial_lines_closes_clients_and_delivers_nothing_after(
    run: Runner,
) -> None:
    async def scenario() -> tuple[Batch, Batch, TcpInput]:
        unit = tcp_input()
        ingest = BatchBuffer(100)
        await unit.start(ingest)
        reader, writer = await asyncio.open_connection(*unit.address)
        writer.write(b'{"seq": 0}\n{"seq": 1, "unfini')
        await writer.drain()
        before = await take(ingest, 1)
        await unit.stop()
        after_stop = ingest.get_nowait(100) or []
        assert unit.metrics.connections == 0
        assert await asyncio.wait_for(reader.read(), 1) == b""
        ingest.close()
        try:
            writer.write(b'{"seq": 2}\n')
            await writer.drain()
        except ConnectionError:
            pass
        await asyncio.sleep(0.05)
        assert ingest.get_nowait(100) is None
        await unit.stop()  # a second stop is harmless
        writer.close()
        return before, after_stop, unit

    before, after_stop, unit = run(scenario())
    assert seqs(before) == [0]
    assert [event["message"] for event in after_stop] == ['{"seq": 1, "unfini']
    assert unit.metrics.decode_issues["truncated_line"] == 1
    assert unit.metrics.events_in == 2


def test_stop_delivers_chunks_held_by_paused_clients_and_late_resumes_do_nothing(
    run: Runner,
) -> None:
    """A client paused with a chunk read but not decoded has it delivered on stop; the
    drained callbacks that ingest.close() then fires touch nothing."""
    first = lines(*numbered(100, client="a"))
    second = lines(*numbered(50, client="b"))

    async def scenario() -> tuple[int, Batch, TcpInput]:
        unit = tcp_input()
        ingest = BatchBuffer(10)
        await unit.start(ingest)
        _, a = await asyncio.open_connection(*unit.address)
        a.write(first)
        await eventually(lambda: ingest.full)
        _, b = await asyncio.open_connection(*unit.address)
        b.write(second)
        await eventually(lambda: unit.metrics.bytes_in == len(first) + len(second))
        before_stop = len(ingest)
        await unit.stop()
        events = ingest.get_nowait(1000) or []
        ingest.close()  # fires both clients' call_when_drained callbacks
        await asyncio.sleep(0.05)
        for writer in (a, b):
            writer.close()
        return before_stop, events, unit

    before_stop, events, unit = run(scenario())
    assert before_stop == 100  # b's chunk waited as bytes
    assert [(e["client"], e["seq"]) for e in events] == [("a", n) for n in range(100)] + [
        ("b", n) for n in range(50)
    ]
    assert unit.metrics.events_in == 150


def test_data_arriving_after_ingest_closed_is_counted_as_dropped_not_raised(
    run: Runner,
) -> None:
    async def scenario() -> TcpInput:
        unit = tcp_input()
        ingest = BatchBuffer(100)
        await unit.start(ingest)
        ingest.close()
        await send_tcp(unit.address, lines(*numbered(3)))
        await eventually(lambda: bool(unit.metrics.dropped))
        await unit.stop()
        return unit

    unit = run(scenario())
    assert unit.metrics.dropped == {"shutdown": 3}
    assert unit.metrics.events_in == 0


# --------------------------------------------------------------------------- property


VALUES = st.integers(-(2**63), 2**63 - 1) | st.text()
LINES = st.one_of(
    st.dictionaries(st.sampled_from(["message", "n", "level"]), VALUES).map(orjson.dumps),
    st.binary(max_size=80).map(lambda raw: raw.replace(b"\n", b" ")),  # garbage, bad UTF-8
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(LINES, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    limit=st.integers(min_value=8, max_value=120),
)
def test_any_chunking_of_any_stream_gives_the_same_events_with_bounded_memory(
    lines: list[bytes], cuts: list[int], limit: int
) -> None:
    """The json_lines decoder, fed the same bytes in any chunks: the same events as in
    one piece, one per non-blank line (long ones cut and tagged), never more than
    ``limit`` bytes of a line held, never an exception."""
    stream = b"".join(line + b"\n" for line in lines)
    pieces = [stream[a:b] for a, b in itertools.pairwise([0, *sorted(cuts), len(stream)])]

    def decode(chunks: list[bytes]) -> Batch:
        unit = tcp_input(max_line_bytes=limit)
        ingest = BatchBuffer(1_000_000)
        conn = _Connection(unit, ingest)
        for chunk in chunks:
            if chunk:
                conn.data_received(chunk)
                assert conn._partial_len <= limit
        events = ingest.get_nowait(1_000_000) or []
        for event in events:  # the time of receipt differs between two decodings
            event.pop("@timestamp", None)
        return events

    whole = decode([stream])
    assert decode(pieces) == whole
    assert len(whole) == sum(1 for line in lines if line.strip())
    for line, event in zip([ln for ln in lines if ln.strip()], whole, strict=True):
        if len(line) > limit:
            assert "_linetoolong" in event["tags"]
            assert len(event["message"]) <= limit  # characters: U+FFFD may replace a byte
