"""The mqtt sink over mqtts:// against a real mosquitto TLS listener."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logstream.config import parse_config
from logstream.metrics import Registry
from logstream.units import BuildContext

pytestmark = pytest.mark.integration


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=logstream test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_cert),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return ca_cert, cert, key


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
    ca, cert, key = make_certificates(tmp_path)
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
    _, cert, key = make_certificates(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_certificates(tmp_path / "other")
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
