"""TLS on the listening inputs (tcp, beats, syslog over TCP, http), with real clients
and certificates made by openssl for each test session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from logstash_async.handler import AsynchronousLogstashHandler
from logstash_async.transport import BeatsTransport

from logstream.buffer import BatchBuffer
from logstream.config import ConfigError, build_pipeline, parse_config
from logstream.event import Batch
from logstream.units import BuildContext, Input
from tests.support.inputs import LOOPS, Runner, eventually, running, take
from tests.support.tls import Certificates, make_certificates

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


def build_input(settings: dict[str, Any]) -> Any:
    config = parse_config({"inputs": [settings], "sinks": [{"type": "stdout"}]})
    return config.inputs[0].build(settings["type"], BuildContext())


def tls(certs: Certificates, **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(certs.cert), "key_file": str(certs.key), **extra}


def client_context(certs: Certificates, *, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca)
    if with_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


async def send_tls(
    unit: Input, data: bytes, context: ssl.SSLContext, *, read: bool = False
) -> bytes:
    """Connect over TLS, send ``data``; return what the server sent until it closed
    (when ``read``), else close at once."""
    host, port = unit.address  # type: ignore[attr-defined]
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    writer.write(data)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 5) if read else b""
    writer.close()
    return got


def test_python_logstash_async_handler_over_tls_reaches_the_tcp_input(
    run: Runner, certs: Certificates
) -> None:
    def log_and_close(address: tuple[str, int]) -> None:
        handler = AsynchronousLogstashHandler(
            address[0], address[1], ssl_enable=True, ssl_verify=True,
            ca_certs=str(certs.ca), database_path=None,
        )  # fmt: skip
        logger = logging.getLogger("tls-test")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            for n in range(20):
                logger.error("record %d", n, extra={"seq": n})
            handler.flush()
        finally:
            logger.removeHandler(handler)
            handler.close()

    async def scenario() -> Batch:
        unit = build_input({"type": "tcp", "listen": "127.0.0.1:0", "tls": tls(certs)})
        async with running(unit, BatchBuffer(100)) as ingest:
            _, events = await asyncio.gather(
                asyncio.to_thread(log_and_close, unit.address), take(ingest, 20)
            )
            return events

    events = run(scenario())
    assert sorted(e["extra"]["seq"] for e in events) == list(range(20))


def test_beats_over_tls_with_a_required_client_certificate_is_delivered_and_acked(
    run: Runner, certs: Certificates
) -> None:
    def send(address: tuple[str, int]) -> None:
        transport = BeatsTransport(
            address[0], address[1], ssl_enable=True, ssl_verify=True,
            ssl_verify_flags=None, keyfile=str(certs.client_key),
            certfile=str(certs.client_cert), ca_certs=str(certs.ca), timeout=5,
        )  # fmt: skip
        transport.send([json.dumps({"message": f"b{n}", "seq": n}) for n in range(15)])
        transport.close()

    async def scenario() -> Batch:
        settings = tls(certs, ca_file=str(certs.ca), client_auth="required")
        unit = build_input({"type": "beats", "listen": "127.0.0.1:0", "tls": settings})
        async with running(unit, BatchBuffer(100)) as ingest:
            _, events = await asyncio.gather(
                asyncio.to_thread(send, unit.address), take(ingest, 15)
            )
            return events

    events = run(scenario())
    assert [e["seq"] for e in events] == list(range(15))


def test_a_client_without_the_required_certificate_is_refused_and_others_go_on(
    run: Runner, certs: Certificates
) -> None:
    async def scenario() -> Batch:
        settings = tls(certs, ca_file=str(certs.ca), client_auth="required")
        unit = build_input({"type": "tcp", "listen": "127.0.0.1:0", "tls": settings})
        async with running(unit, BatchBuffer(100)) as ingest:
            # No certificate: refused in the handshake (TLS 1.3 tells the client on its
            # first read, as an error or an end of stream).
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await send_tls(unit, b'{"seq": -1}\n', client_context(certs), read=True)
            # Plain text to the TLS port: the handshake fails, the connection closes.
            reader, writer = await asyncio.open_connection(*unit.address)
            writer.write(b'{"seq": -2}\n')
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await send_tls(unit, b'{"seq": 1}\n', client_context(certs, with_cert=True))
            events = await take(ingest, 1)
            await eventually(lambda: unit.metrics.connections == 0)
            await asyncio.sleep(0.1)
            return events + (ingest.get_nowait(100) or [])

    events = run(scenario())
    assert [e["seq"] for e in events] == [1]  # only the client with a certificate


def test_syslog_over_tls_takes_octet_counted_rfc5424(run: Runner, certs: Certificates) -> None:
    message = b"<34>1 2026-11-24T10:00:00Z web-1 sshd 42 ID1 - Failed password for root"

    async def scenario() -> Batch:
        unit = build_input(
            {"type": "syslog", "listen": "127.0.0.1:0", "protocol": "tcp", "tls": tls(certs)}
        )
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tls(unit, b"%d %s" % (len(message), message), client_context(certs))
            return await take(ingest, 1)

    (event,) = run(scenario())
    assert event["message"].endswith("Failed password for root")
    assert event["level"] == "CRITICAL"  # severity 2


def test_http_input_serves_https(run: Runner, certs: Certificates) -> None:
    async def scenario() -> tuple[int, Batch]:
        unit = build_input({"type": "http", "listen": "127.0.0.1:0", "tls": tls(certs)})
        async with running(unit, BatchBuffer(100)) as ingest, ClientSession() as session:
            _, port = unit.address
            async with session.post(
                f"https://localhost:{port}/", json=[{"seq": 1}, {"seq": 2}],
                ssl=client_context(certs),
            ) as response:  # fmt: skip
                status = response.status
            return status, await take(ingest, 2)

    status, events = run(scenario())
    assert status == 200
    assert [e["seq"] for e in events] == [1, 2]


@pytest.mark.parametrize("unit_type", ["tcp", "beats", "http", "syslog"])
def test_an_unusable_certificate_is_a_config_error_naming_the_file(
    tmp_path: Path, certs: Certificates, unit_type: str
) -> None:
    missing = tmp_path / "missing.pem"
    settings: dict[str, Any] = {
        "type": unit_type,
        "listen": "127.0.0.1:0",
        "tls": {"cert_file": str(missing), "key_file": str(certs.key)},
    }
    if unit_type == "syslog":
        settings["protocol"] = "tcp"
    config = parse_config({"inputs": [settings], "sinks": [{"type": "stdout"}]})
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        build_pipeline(config)


def test_client_auth_without_a_ca_and_tls_on_syslog_udp_are_rejected(certs: Certificates) -> None:
    with pytest.raises(ConfigError, match="needs ca_file"):
        parse_config(
            {
                "inputs": [{"type": "tcp", "tls": tls(certs, client_auth="required")}],
                "sinks": [{"type": "stdout"}],
            }
        )
    with pytest.raises(ConfigError, match="needs protocol: tcp"):
        parse_config(
            {"inputs": [{"type": "syslog", "tls": tls(certs)}], "sinks": [{"type": "stdout"}]}
        )
