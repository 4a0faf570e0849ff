"""The udp input driven directly over real sockets, with a real BatchBuffer as ingest,
on uvloop (production) and on asyncio's own loop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from logstream.buffer import BatchBuffer
from logstream.event import Batch
from logstream.inputs.udp import UdpInput, UdpInputConfig
from logstream.units import BuildContext
from tests.support.inputs import LOOPS, Runner, numbered, running, take, take_until_quiet


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


def udp_input(**settings: Any) -> UdpInput:
    config = UdpInputConfig.model_validate({"type": "udp", "listen": "127.0.0.1:0", **settings})
    return config.build("udp", BuildContext())


async def send_datagrams(address: tuple[str, int], datagrams: list[bytes]) -> None:
    """Send each datagram, yielding to the loop now and then so the input keeps up
    (loopback drops what overflows the receive buffer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for index, datagram in enumerate(datagrams):
            client.sendto(datagram, address)
            if index % 20 == 19:
                await asyncio.sleep(0.001)


# --------------------------------------------------------------------------- config


def test_config_defaults() -> None:
    config = UdpInputConfig.model_validate({"type": "udp"})
    assert config.listen == "127.0.0.1:5959"
    assert config.max_datagram_bytes == 65_535
    assert config.receive_buffer_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("settings", "key", "value"),
    [
        ({"listen": "5959"}, "listen", "5959"),
        ({"listen": "[::1]:99999"}, "listen", "99999"),
        ({"max_datagram_bytes": 0}, "max_datagram_bytes", "0"),
        ({"max_datagram_bytes": 70_000}, "max_datagram_bytes", "70000"),
        ({"receive_buffer_bytes": 10}, "receive_buffer_bytes", "10"),
        ({"buffer": 10}, "buffer", "10"),
    ],
)
def test_bad_settings_are_rejected_naming_the_key_and_the_value(
    settings: dict[str, Any], key: str, value: str
) -> None:
    with pytest.raises(ValidationError) as error:
        UdpInputConfig.model_validate({"type": "udp", **settings})
    assert key in str(error.value)
    assert value in str(error.value)


def test_start_raises_oserror_when_the_port_is_taken(run: Runner) -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            unit = udp_input(listen=f"127.0.0.1:{taken.getsockname()[1]}")
            with pytest.raises(OSError, match="in use"):
                await unit.start(BatchBuffer(10))
            await unit.stop()

    run(scenario())


def test_receive_buffer_bytes_is_applied_to_the_socket(run: Runner) -> None:
    async def scenario() -> int:
        unit = udp_input(receive_buffer_bytes=1_000_000)
        async with running(unit, BatchBuffer(10)):
            return unit.receive_buffer_bytes

    # Linux doubles the value asked for (bookkeeping) and caps it at rmem_max.
    assert run(scenario()) >= 1_000_000


def test_stop_without_start_does_not_raise(run: Runner) -> None:
    run(udp_input().stop())


# --------------------------------------------------------------------------- delivery


def test_each_datagram_becomes_one_event_with_or_without_a_trailing_newline(
    run: Runner,
) -> None:
    datagrams = [
        orjson.dumps(event) + (b"\n" if event["seq"] % 2 else b"") for event in numbered(500)
    ]

    async def scenario() -> tuple[Batch, UdpInput]:
        unit = udp_input()
        async with running(unit, BatchBuffer(10_000)) as ingest:
            await send_datagrams(unit.address, datagrams)
            return await take(ingest, 500), unit

    events, unit = run(scenario())
    assert sorted(event["seq"] for event in events) == list(range(500))
    assert events[0] == numbered(1)[0]
    assert unit.metrics.events_in == 500
    assert unit.metrics.bytes_in == sum(map(len, datagrams))
    assert dict(unit.metrics.decode_issues) == {}


def test_v0_events_are_normalised_and_missing_hosts_are_the_senders_address(
    run: Runner,
) -> None:
    v0 = {
        "@timestamp": "2026-11-24T10:00:00.000Z",
        "@message": "hello",
        "@source_host": "app-3",
        "@fields": {"levelname": "WARNING", "logger": "app", "user": "carol"},
    }

    async def scenario() -> Batch:
        unit = udp_input()
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_datagrams(unit.address, [orjson.dumps(v0), b'{"message": "no host"}'])
            return await take(ingest, 2)

    flat, no_host = run(scenario())
    assert flat == {
        "@timestamp": "2026-11-24T10:00:00.000Z",
        "@version": "1",
        "message": "hello",
        "host": "app-3",
        "level": "WARNING",
        "logger_name": "app",
        "user": "carol",
    }
    assert no_host["host"] == "127.0.0.1"


def test_bad_datagrams_become_tagged_events_and_are_counted(run: Runner) -> None:
    datagrams = [
        b"plain text\n",
        b"[1, 2]",
        b'{"message": "caf\xe9"}',
        b"",
        b"\r\n",
        orjson.dumps({"message": "z" * 500}),
    ]

    async def scenario() -> tuple[Batch, UdpInput]:
        unit = udp_input(max_datagram_bytes=100)
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_datagrams(unit.address, datagrams)
            return await take_until_quiet(ingest), unit

    events, unit = run(scenario())
    by_message = {event["message"][:12]: event for event in events}
    assert len(events) == 4  # the empty and blank datagrams are skipped
    assert by_message["plain text"]["tags"] == ["_jsonparsefailure"]
    assert by_message["[1, 2]"]["tags"] == ["_jsonparsefailure"]
    assert by_message["caf\ufffd"]["tags"] == ["_utf8error"]
    cut = by_message['{"message":"']
    assert cut["message"] == orjson.dumps({"message": "z" * 500})[:100].decode()
    assert cut["tags"] == ["_linetoolong"]
    assert all(event["host"] == "127.0.0.1" for event in events)
    assert unit.metrics.decode_issues == {
        "json_parse_failure": 2,
        "invalid_utf8": 1,
        "line_too_long": 1,
    }


# --------------------------------------------------------------------------- flow control


def test_datagrams_arriving_while_ingest_is_full_are_dropped_and_counted(run: Runner) -> None:
    async def scenario() -> tuple[Batch, UdpInput]:
        unit = udp_input()
        async with running(unit, BatchBuffer(50)) as ingest:
            await send_datagrams(unit.address, [orjson.dumps(e) for e in numbered(200)])
            await asyncio.sleep(0.1)
            kept = ingest.get_nowait(1000) or []
            # Drained: taken again.
            await send_datagrams(unit.address, [orjson.dumps(e) for e in numbered(10, 1000)])
            kept += await take(ingest, 10)
        return kept, unit

    kept, unit = run(scenario())
    dropped = unit.metrics.dropped["ingest_full"]
    assert dropped > 0
    assert len(kept) + dropped == 210
    assert unit.metrics.events_in == len(kept)
    assert [event["seq"] for event in kept[-10:]] == list(range(1000, 1010))


class RecordingBuffer(BatchBuffer):
    """A real BatchBuffer that also records the size of every batch pushed."""

    def __init__(self, max_events: int) -> None:
        super().__init__(max_events)
        self.pushed: list[int] = []

    def push(self, batch: Batch) -> None:
        self.pushed.append(len(batch))
        super().push(batch)


def test_a_burst_read_in_one_loop_turn_is_offered_as_one_batch(run: Runner) -> None:
    """uvloop reads up to 32 datagrams per wakeup; they cross to ingest as one batch
    (asyncio's own loop reads one per turn, so there each is a batch of one)."""

    async def scenario() -> list[int]:
        unit = udp_input()
        ingest = RecordingBuffer(10_000)
        async with running(unit, ingest):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                for event in numbered(30):
                    client.sendto(orjson.dumps(event), unit.address)
            await take(ingest, 30)
        return ingest.pushed

    pushed = run(scenario())
    assert sum(pushed) == 30
    if run.loop == "uvloop":
        assert len(pushed) < 30


# --------------------------------------------------------------------------- stop


def test_stop_delivers_what_was_received_and_nothing_after(run: Runner) -> None:
    async def scenario() -> tuple[Batch, UdpInput]:
        unit = udp_input()
        ingest = BatchBuffer(100)
        await unit.start(ingest)
        address = unit.address
        await send_datagrams(address, [b'{"seq": 0}'])
        events = await take(ingest, 1)
        await unit.stop()
        ingest.close()
        await send_datagrams(address, [b'{"seq": 1}'])
        await asyncio.sleep(0.05)
        assert ingest.get_nowait(10) is None
        await unit.stop()  # a second stop is harmless
        return events, unit

    events, unit = run(scenario())
    assert [event["seq"] for event in events] == [0]
    assert unit.metrics.events_in == 1
    assert dict(unit.metrics.dropped) == {}
