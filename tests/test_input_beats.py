"""The beats input driven over real sockets by real Lumberjack clients (pylogbeat,
python-logstash-async's BeatsTransport) and by hand-written frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import zlib
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from logstash_async.handler import AsynchronousLogstashHandler
from logstash_async.transport import BeatsTransport
from pydantic import ValidationError
from pylogbeat import PyLogBeatClient

from logstream.buffer import BatchBuffer
from logstream.event import Batch
from logstream.inputs.beats import BeatsInput, BeatsInputConfig, FrameDecoder
from logstream.metrics import Registry
from logstream.units import BuildContext
from tests.support.inputs import (
    LOOPS,
    Runner,
    SafeOnPush,
    eventually,
    running,
    take,
    take_until_quiet,
)

MIB = 1024 * 1024


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


def beats_input(registry: Registry | None = None, **settings_: Any) -> BeatsInput:
    config = BeatsInputConfig.model_validate(
        {"type": "beats", "listen": "127.0.0.1:0", **settings_}
    )
    return config.build("beats", BuildContext(registry=registry or Registry()))


def window(count: int) -> bytes:
    return struct.pack(">BBI", ord("2"), ord("W"), count)


def json_frame(seq: int, event: dict[str, Any] | bytes) -> bytes:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return struct.pack(">BBII", ord("2"), ord("J"), seq, len(body)) + body


def compressed(payload: bytes) -> bytes:
    body = zlib.compress(payload)
    return struct.pack(">BBI", ord("2"), ord("C"), len(body)) + body


def data_frame(seq: int, pairs: dict[str, str]) -> bytes:
    out = struct.pack(">BBII", ord("2"), ord("D"), seq, len(pairs))
    for key, value in pairs.items():
        for text in (key.encode(), value.encode()):
            out += struct.pack(">I", len(text)) + text
    return out


def acks(data: bytes) -> list[int]:
    return [struct.unpack(">I", data[i + 2 : i + 6])[0] for i in range(0, len(data), 6)]


def beat_event(n: int) -> dict[str, Any]:
    return {
        "@timestamp": "2026-11-24T10:00:00.000Z",
        "@metadata": {"beat": "filebeat", "type": "_doc", "version": "8.15.0"},
        "agent": {"type": "filebeat", "name": "web-1"},
        "host": {"name": "web-1"},
        "log": {"file": {"path": "/var/log/app.log"}, "offset": n * 10},
        "message": f"line {n}",
        "seq": n,
    }


async def exchange(
    address: tuple[str, int], chunks: list[bytes], read_until: int = 0, pause_secs: float = 0
) -> bytes:
    """Send ``chunks`` (one write each, ``pause_secs`` apart); read until ``read_until``
    ACK bytes arrived or the server closed."""
    reader, writer = await asyncio.open_connection(*address)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        if pause_secs:
            await asyncio.sleep(pause_secs)
    got = b""
    try:
        while len(got) < read_until or not read_until:
            part = await asyncio.wait_for(reader.read(4096), 2)
            if not part:
                break
            got += part
    except (ConnectionError, TimeoutError):
        pass
    writer.close()
    return got


# --------------------------------------------------------------------------- config


def test_config_defaults_and_unknown_keys() -> None:
    config = BeatsInputConfig.model_validate({"type": "beats"})
    assert config.listen == "127.0.0.1:5044"
    assert config.max_frame_bytes == 32 * MIB
    assert config.ack_keepalive_secs == 5.0
    with pytest.raises(ValidationError):
        BeatsInputConfig.model_validate({"type": "beats", "bogus": 1})
    with pytest.raises(ValidationError, match="listen"):
        BeatsInputConfig.model_validate({"type": "beats", "listen": "nope"})


# --------------------------------------------------------------------------- real clients


def test_pylogbeat_windows_arrive_with_metadata_and_are_acked(run: Runner) -> None:
    """Two compressed windows from pylogbeat: every event arrives with its Beats fields,
    and send() returns (it got the ACK of each window's last sequence)."""

    def send(address: tuple[str, int]) -> None:
        with PyLogBeatClient(*address, timeout=5) as client:
            client.send([beat_event(n) for n in range(50)])
            client.send([beat_event(n) for n in range(50, 60)])

    async def scenario() -> tuple[Batch, BeatsInput]:
        unit = beats_input()
        async with running(unit, BatchBuffer(1000)) as ingest:
            # The client waits for ACKs, sent once the events are taken (safe).
            _, events = await asyncio.gather(
                asyncio.to_thread(send, unit.address), take(ingest, 60)
            )
            return events, unit

    events, unit = run(scenario())
    assert [e["seq"] for e in events] == list(range(60))
    first = events[0]
    assert first["@metadata"]["beat"] == "filebeat"
    assert first["agent"]["type"] == "filebeat"
    assert first["log"]["file"]["path"] == "/var/log/app.log"
    assert first["host"] == {"name": "web-1"}
    assert unit.metrics.events_in == 60
    assert unit.metrics.errors == 0


def test_logstash_async_beats_transport_delivers_and_gets_acked(run: Runner) -> None:
    def send(address: tuple[str, int]) -> None:
        transport = BeatsTransport(
            address[0], address[1], ssl_enable=False, ssl_verify=False,
            ssl_verify_flags=None, keyfile=None, certfile=None, ca_certs=None, timeout=5,
        )  # fmt: skip
        transport.send([json.dumps({"message": f"m{n}", "seq": n}) for n in range(30)])
        transport.close()

    async def scenario() -> Batch:
        unit = beats_input()
        async with running(unit, BatchBuffer(1000)) as ingest:
            # The client waits for ACKs, sent once the events are taken (safe).
            _, events = await asyncio.gather(
                asyncio.to_thread(send, unit.address), take(ingest, 30)
            )
            return events

    events = run(scenario())
    assert [e["seq"] for e in events] == list(range(30))
    assert all(e["host"] == "127.0.0.1" for e in events)  # no host sent: the peer's IP


def test_asynchronous_logstash_handler_with_beats_transport_delivers_log_records(
    run: Runner,
) -> None:
    """python-logstash-async's handler as applications use it: records reach ingest with
    their fields, and shutdown completes (the worker got its ACKs, nothing left queued)."""

    def log_and_close(address: tuple[str, int]) -> None:
        handler = AsynchronousLogstashHandler(
            address[0],
            address[1],
            transport="logstash_async.transport.BeatsTransport",
            database_path=None,
        )
        logger = logging.getLogger("beats-test")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            for n in range(20):
                logger.warning("record %d", n, extra={"seq": n})
            handler.flush()
        finally:
            logger.removeHandler(handler)
            handler.close()

    async def scenario() -> Batch:
        unit = beats_input()
        async with running(unit, BatchBuffer(1000)) as ingest:
            # The client waits for ACKs, sent once the events are taken (safe).
            _, events = await asyncio.gather(
                asyncio.to_thread(log_and_close, unit.address), take(ingest, 20)
            )
            return events

    events = run(scenario())
    # The handler's in-memory queue does not keep order; every record arrives once.
    assert sorted(e["extra"]["seq"] for e in events) == list(range(20))
    assert all(e["message"] == f"record {e['extra']['seq']}" for e in events)
    assert events[0]["level"] == "WARNING"


# --------------------------------------------------------------------------- hand-written


def test_uncompressed_window_split_byte_by_byte_is_acked_once_at_its_end(run: Runner) -> None:
    frames = window(3) + b"".join(json_frame(n, {"seq": n}) for n in (7, 8, 9))

    async def scenario() -> tuple[Batch, bytes]:
        unit = beats_input()
        async with running(unit, SafeOnPush(100)) as ingest:
            segments = [frames[i : i + 1] for i in range(len(frames))]
            got = await exchange(unit.address, segments, read_until=6)
            return await take(ingest, 3), got

    events, got = run(scenario())
    assert [e["seq"] for e in events] == [7, 8, 9]
    assert acks(got) == [9]


def test_window_is_acked_only_once_the_pipeline_says_its_events_are_safe(run: Runner) -> None:
    """Events taken from ingest are not yet safe (a spooled sink may not have them on
    disk): the ACK waits for mark_safe, and a keep-alive acknowledges only safe events."""
    frames = window(3) + json_frame(1, {"n": 1}) + json_frame(2, {"n": 2})

    async def scenario() -> tuple[bytes, bytes, bytes]:
        unit = beats_input(ack_keepalive_secs=0.05)
        ingest = BatchBuffer(100, safe_when_taken=False)
        async with running(unit, ingest):
            reader, writer = await asyncio.open_connection(*unit.address)
            writer.write(frames)
            await writer.drain()
            await take(ingest, 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(6), 0.3)  # nothing: not safe yet
                raise AssertionError("acknowledged before the events were safe")
            ingest.mark_safe(2)
            partial = await asyncio.wait_for(reader.readexactly(6), 2)  # a keep-alive
            writer.write(json_frame(3, {"n": 3}))
            await writer.drain()
            await take(ingest, 1)
            ingest.mark_safe(ingest.accepted)
            got = b""
            while 3 not in acks(got):
                got += await asyncio.wait_for(reader.readexactly(6), 2)
            writer.close()
            return partial, got, b""

    partial, got, _ = run(scenario())
    assert acks(partial) == [2]  # keep-alive of the window's last safe event
    assert acks(got)[-1] == 3


def test_two_windows_in_one_segment_get_one_ack_each(run: Runner) -> None:
    frames = window(1) + json_frame(1, {"n": 1}) + window(2)
    frames += json_frame(1, {"n": 2}) + json_frame(2, {"n": 3})

    async def scenario() -> tuple[Batch, bytes]:
        unit = beats_input()
        async with running(unit, SafeOnPush(100)) as ingest:
            got = await exchange(unit.address, [frames], read_until=12)
            return await take(ingest, 3), got

    events, got = run(scenario())
    assert [e["n"] for e in events] == [1, 2, 3]
    assert acks(got) == [1, 2]


def test_data_frames_and_nested_compressed_windows(run: Runner) -> None:
    payload = window(2) + data_frame(1, {"line": "hello", "source": "/x"}) + json_frame(2, {"a": 1})

    async def scenario() -> tuple[Batch, bytes]:
        unit = beats_input()
        async with running(unit, SafeOnPush(100)) as ingest:
            got = await exchange(unit.address, [compressed(payload)], read_until=6)
            return await take(ingest, 2), got

    events, got = run(scenario())
    assert events[0]["message"] == "hello"
    assert events[0]["source"] == "/x"
    assert events[1]["a"] == 1
    assert acks(got) == [2]


def test_bad_json_becomes_a_tagged_event_and_the_window_is_still_acked(run: Runner) -> None:
    frames = window(2) + json_frame(1, b"{not json") + json_frame(2, {"ok": True})

    async def scenario() -> tuple[Batch, bytes, BeatsInput]:
        unit = beats_input()
        async with running(unit, SafeOnPush(100)) as ingest:
            got = await exchange(unit.address, [frames], read_until=6)
            return await take(ingest, 2), got, unit

    events, got, unit = run(scenario())
    assert events[0]["message"] == "{not json"
    assert events[0]["tags"] == ["_jsonparsefailure"]
    assert acks(got) == [2]
    assert unit.metrics.decode_issues == {"json_parse_failure": 1}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"1W\x00\x00\x00\x01", "bad_version"),
        (b"2Z\x00\x00\x00\x01", "unknown_frame_type"),
        (b"GET / HTTP/1.1\r\n\r\n", "bad_version"),
        (struct.pack(">BBII", ord("2"), ord("J"), 1, 0xFFFFFFF0), "frame_too_large"),
        (struct.pack(">BBI", ord("2"), ord("C"), 2 * MIB), "frame_too_large"),
        (compressed(b"\x00" * (4 * MIB)), "decompressed_too_large"),
        (struct.pack(">BBI", ord("2"), ord("C"), 5) + b"zzzzz", "bad_compressed_frame"),
    ],
    ids=["version", "type", "garbage", "json-length", "compressed-length", "zip-bomb", "bad-zlib"],
)
def test_protocol_violations_close_the_connection_and_are_counted(
    run: Runner, data: bytes, reason: str
) -> None:
    registry = Registry()

    async def scenario() -> tuple[bytes, BeatsInput, Batch]:
        unit = beats_input(registry, max_frame_bytes=MIB)
        async with running(unit, SafeOnPush(100)) as ingest:
            good = window(1) + json_frame(1, {"before": True})
            got = await exchange(unit.address, [good, data])
            await eventually(lambda: unit.metrics.connections == 0)
            return got, unit, await take_until_quiet(ingest, 0.05)

    got, unit, events = run(scenario())
    assert acks(got) == [1]  # what came before was delivered and acked; then closed
    assert [e.get("before") for e in events] == [True]
    assert dict(unit.protocol_errors) == {reason: 1}
    exported = registry.exposition().decode()
    assert (
        f'logstream_protocol_errors_total{{kind="input",reason="{reason}",unit="beats"}} 1.0'
        in (exported)
    )


def test_client_disconnecting_mid_window_keeps_pushed_events_without_ack(run: Runner) -> None:
    frames = window(3) + json_frame(1, {"n": 1}) + json_frame(2, {"n": 2})

    async def scenario() -> tuple[Batch, bytes, BeatsInput]:
        unit = beats_input()
        async with running(unit, SafeOnPush(100)) as ingest:
            reader, writer = await asyncio.open_connection(*unit.address)
            writer.write(frames + b"2J\x00\x00")  # and half a header
            await writer.drain()
            events = await take(ingest, 2)
            writer.close()
            await eventually(lambda: unit.metrics.connections == 0)
            return events, await reader.read(), unit

    events, got, unit = run(scenario())
    assert [e["n"] for e in events] == [1, 2]
    assert got == b""
    assert unit.metrics.errors == 0


def test_slow_window_gets_keepalive_partial_acks_of_its_own_events_only(run: Runner) -> None:
    """A window waiting for its second event is acked, every ack_keepalive_secs, up to
    its first; an empty new window never repeats the previous window's sequence."""

    async def scenario() -> bytes:
        unit = beats_input(ack_keepalive_secs=0.05)
        async with running(unit, SafeOnPush(100)) as ingest:
            reader, writer = await asyncio.open_connection(*unit.address)
            writer.write(window(1) + json_frame(4, {"n": 0}))
            assert acks(await asyncio.wait_for(reader.readexactly(6), 2)) == [4]
            writer.write(window(2))
            with contextlib.suppress(TimeoutError):
                early = await asyncio.wait_for(reader.read(6), 0.2)
                raise AssertionError(f"keep-alive for an empty window: {early!r}")
            writer.write(json_frame(5, {"n": 1}))
            await take(ingest, 2)
            got = await asyncio.wait_for(reader.readexactly(6), 2)
            writer.write(json_frame(6, {"n": 2}))
            while acks(got)[-1] != 6:
                got += await asyncio.wait_for(reader.readexactly(6), 2)
            writer.close()
            return got

    got = run(scenario())
    assert set(acks(got)[:-1]) == {5}
    assert acks(got)[-1] == 6


def test_full_ingest_pauses_and_acks_only_after_the_window_is_pushed(run: Runner) -> None:
    """With ingest full, a window's bytes wait unread-as-events; no ACK comes until it
    drains, then the window is pushed and acked."""

    async def scenario() -> tuple[bytes, bytes, Batch]:
        unit = beats_input(ack_keepalive_secs=10)
        ingest = SafeOnPush(2)
        async with running(unit, ingest):
            ingest.push([{"filler": 1}, {"filler": 2}])
            reader, writer = await asyncio.open_connection(*unit.address)
            writer.write(window(2) + json_frame(1, {"n": 1}) + json_frame(2, {"n": 2}))
            await writer.drain()
            await eventually(lambda: unit.metrics.bytes_in > 0)
            await asyncio.sleep(0.1)
            early = b""
            with contextlib.suppress(TimeoutError):
                early = await asyncio.wait_for(reader.read(6), 0.1)
            drained = await take(ingest, 2)
            got = await asyncio.wait_for(reader.readexactly(6), 2)
            events = drained + await take(ingest, 2)
            writer.close()
        return early, got, events

    early, got, events = run(scenario())
    assert early == b""
    assert acks(got) == [2]
    assert [e.get("n") for e in events] == [None, None, 1, 2]


def test_max_connections_refuses_extra_clients(run: Runner) -> None:
    async def scenario() -> BeatsInput:
        unit = beats_input(max_connections=1)
        async with running(unit, SafeOnPush(100)):
            _, first = await asyncio.open_connection(*unit.address)
            await eventually(lambda: unit.metrics.connections == 1)
            extra = socket.create_connection(unit.address)
            await eventually(lambda: unit.metrics.dropped.get("too_many_connections") == 1)
            extra.close()
            first.close()
        return unit

    assert run(scenario()).metrics.connections == 0


# --------------------------------------------------------------------------- property


# Pieces that look like frames, so the fuzzing gets past the version byte.
FRAMEISH = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda kind, n, rest: b"2" + kind + struct.pack(">I", n) + rest,
        st.sampled_from([b"W", b"J", b"D", b"C"]),
        st.integers(0, 100),
        st.binary(max_size=120),
    ),
    st.builds(lambda raw: compressed(raw), st.binary(max_size=200)),
    st.builds(lambda n: compressed(window(1) + json_frame(n, {"n": n})), st.integers(0, 9)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAMEISH, max_size=8))
def test_decoder_never_raises_and_holds_at_most_its_bound(chunks: list[bytes]) -> None:
    bound = 64
    decoder = FrameDecoder(bound)
    for chunk in chunks:
        decoder.feed(chunk)
        assert decoder.held <= bound + 10


# 64-bit integers: orjson (decode_json, shared with the tcp input) reads larger ones as floats.
INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), INT64), max_size=5), st.data())
def test_decoder_splits_anywhere_give_the_same_events(
    events: list[dict[str, int]], data: st.DataObject
) -> None:
    stream = window(len(events)) + b"".join(json_frame(n, e) for n, e in enumerate(events))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    decoder = FrameDecoder(MIB)
    items = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        result = decoder.feed(stream[start:end])
        assert result.error is None
        items += result.items
    assert items[0] == ("W", len(events))
    assert [item[1] for item in items[1:]] == list(range(len(events)))
    for sent, item in zip(events, items[1:], strict=True):
        decoded = cast(dict[str, Any], item[2])
        assert decoded == {**decoded, **sent}  # every sent field, as sent
