"""The mqtt sink over mqtts:// against a real mosquitto TLS listener."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logstream.config import parse_config
from logstream.metrics import Registry
from logstream.units import BuildContext
from tests.support.tls import make_certificates

pytestmark = pytest.mark.integration


def mqtt_sink(
    url: str, topic: str, ca_file: Path, registry: Registry, connect_wait_secs: float = 5
) -> Any:
    config = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "sinks": [
                {
                    "type": "mqtt",
                    "url": url,
                    "topic": topic,
                    "qos": 1,
                    "ca_file": str(ca_file),
                    "connect_wait_secs": connect_wait_secs,
                }
            ],
        }
    ).sinks[0]
    return config.build("mqtts", BuildContext(registry=registry))


def test_events_reach_a_tls_broker_over_mqtts_with_a_private_ca(
    mosquitto_factory: Callable[..., Any],
    mqtt_subscriber: Callable[..., Any],
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path)
    ca, cert, key = certs.ca, certs.cert, certs.key
    # certfile/keyfile after the launcher's listener line make that listener TLS.
    broker = mosquitto_factory([f"certfile {cert}", f"keyfile {key}"])
    url = f"mqtts://127.0.0.1:{broker.port}"
    subscriber = mqtt_subscriber(url, "secure/#", ca_certs=str(ca))
    registry = Registry()
    sink = mqtt_sink(url, "secure/{host}", ca, registry)

    async def scenario() -> None:
        await sink.start()
        await sink.write([{"message": f"tls {n}", "host": "web-1"} for n in range(10)])
        await sink.close()

    asyncio.run(scenario())
    received = subscriber.wait_for(10, timeout_secs=10)
    assert [m.json()["message"] for m in received] == [f"tls {n}" for n in range(10)]
    assert {m.topic for m in received} == {"secure/web-1"}
    assert registry["mqtts"].events_out == 10


def test_a_broker_whose_certificate_the_ca_did_not_sign_gets_nothing(
    mosquitto_factory: Callable[..., Any], tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path)
    cert, key = certs.cert, certs.key
    other_ca = make_certificates(tmp_path / "other").ca
    broker = mosquitto_factory([f"certfile {cert}", f"keyfile {key}"])
    registry = Registry()
    sink = mqtt_sink(f"mqtts://127.0.0.1:{broker.port}", "secure/x", other_ca, registry, 1)

    async def scenario() -> None:
        await sink.start()
        await sink.write([{"message": "must not leave"}])
        await sink.close()

    asyncio.run(scenario())
    metrics = registry["mqtts"]
    assert metrics.events_out == 0
    assert metrics.dropped["not_connected"] == 1
