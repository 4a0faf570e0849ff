"""UDP losses are never silent: datagrams the kernel dropped because a socket's receive
buffer was full are counted as ``receive_buffer`` drops, for the udp input and the
syslog input's UDP side. A real socket is flooded while the event loop cannot read it;
then received + counted drops must equal sent, exactly."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from logstream.buffer import BatchBuffer
from logstream.inputs.syslog import SyslogInput, SyslogInputConfig
from logstream.inputs.udp import DEFAULT_RECEIVE_BUFFER, UdpInput, UdpInputConfig
from logstream.units import BuildContext
from tests.support.inputs import LOOPS, Runner, running

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/udp").exists() or sys.platform != "linux",
    reason="kernel receive-buffer drops are read from Linux's /proc/net/udp",
)


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


def flood(address: tuple[str, int], count: int, payload: bytes) -> None:
    """Send ``count`` datagrams without yielding: the input cannot read meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for _ in range(count):
            client.sendto(payload, address)


async def drain(ingest: BatchBuffer, until: Any, timeout_secs: float = 10.0) -> int:
    """Take events from ``ingest`` until ``until(taken)`` or the ingest is quiet for 0.3 s."""
    taken = 0
    quiet = 0.0
    async with asyncio.timeout(timeout_secs):
        while not until(taken) and quiet < 0.3:
            batch = ingest.get_nowait(100_000)
            if batch:
                taken += len(batch)
                quiet = 0.0
            else:
                await asyncio.sleep(0.02)
                quiet += 0.02
    return taken


def test_a_flood_beyond_the_receive_buffer_is_counted_exactly(run: Runner) -> None:
    sent = 3_000
    ctx = BuildContext()

    async def scenario() -> tuple[UdpInput, int]:
        config = UdpInputConfig(type="udp", listen="127.0.0.1:0", receive_buffer_bytes=4096)
        unit = config.build("udp", ctx)
        async with running(unit, BatchBuffer(100_000)) as ingest:
            flood(unit.address, sent, b'{"message": "burst"}')
            received = await drain(ingest, lambda taken: taken >= sent)
        # Stopping read the kernel's last count: no explicit call needed.
        return unit, received

    unit, received = run(scenario())
    dropped = unit.metrics.dropped["receive_buffer"]
    assert dropped > 0, "a 4 kB buffer cannot hold 3000 datagrams"
    assert received + dropped == sent
    assert unit.metrics.events_in == received
    exported = ctx.registry.exposition().decode()
    series = 'logstream_events_dropped_total{kind="input",reason="receive_buffer",unit="udp"}'
    assert f"{series} {float(dropped)}" in exported.splitlines()


def test_the_syslog_inputs_udp_side_counts_receive_buffer_drops(run: Runner) -> None:
    sent = 40_000  # beyond the default buffer (8 MiB asked, rmem_max granted)

    async def scenario() -> tuple[SyslogInput, int, int]:
        config = SyslogInputConfig(type="syslog", listen="127.0.0.1:0", protocol="udp")
        unit = config.build("syslog", BuildContext())
        assert isinstance(unit, SyslogInput) and unit.udp is not None
        side = unit.udp
        async with running(unit, BatchBuffer(1_000_000)) as ingest:
            flood(unit.address, sent, b"<13>Nov 24 10:00:00 host app: burst")
            received = await drain(ingest, lambda taken: taken + side.count_receive_drops() >= sent)
            counted = side.count_receive_drops()
        return unit, received, counted

    unit, received, counted = run(scenario())
    assert counted > 0
    assert unit.metrics.dropped["receive_buffer"] == counted
    assert received + counted == sent


def test_the_default_receive_buffer_is_asked_for_and_a_cap_is_logged(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())

    async def scenario() -> int:
        unit = UdpInputConfig(type="udp", listen="127.0.0.1:0").build("udp", BuildContext())
        async with running(unit, BatchBuffer(10)):
            return unit.receive_buffer_bytes

    assert UdpInputConfig(type="udp").receive_buffer_bytes == DEFAULT_RECEIVE_BUFFER
    with caplog.at_level(logging.WARNING, logger="logstream.inputs.udp"):
        granted = run(scenario()) // 2  # Linux reports twice the usable size
    capped = [r for r in caplog.records if "net.core.rmem_max" in r.getMessage()]
    if rmem_max < DEFAULT_RECEIVE_BUFFER:
        assert granted == rmem_max
        assert len(capped) == 1
        assert f"{DEFAULT_RECEIVE_BUFFER} bytes asked, {rmem_max} granted" in capped[0].getMessage()
    else:
        assert granted == DEFAULT_RECEIVE_BUFFER
        assert capped == []
