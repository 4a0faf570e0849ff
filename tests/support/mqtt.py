"""MQTT fixtures: a mosquitto per test, a subscriber, and brokers that misbehave.

``mosquitto`` starts a broker on a free port in the test's tmp_path (never the
broker that may run on 1883). With ``LOGSTREAM_TEST_MQTT_URL`` set it is that
external broker instead, and tests that stop, restart or configure a broker
(``local_mosquitto``, ``mosquitto_factory``) are skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from logstream.local.mosquitto import Mosquitto, MosquittoError, find_mosquitto

__all__ = [
    "black_hole",
    "local_mosquitto",
    "mosquitto",
    "mosquitto_factory",
    "mqtt_subscriber",
    "mqtt_topic_root",
    "stalled_broker",
]

ENV_URL = "LOGSTREAM_TEST_MQTT_URL"


# --------------------------------------------------------------------------- brokers


@dataclass
class ExternalBroker:
    """A broker the tests did not start: it cannot be stopped or reconfigured."""

    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883

    def stop(self) -> None:
        pytest.skip(f"cannot stop the external broker {ENV_URL}={self.url}")

    def start(self) -> ExternalBroker:
        pytest.skip(f"cannot start the external broker {ENV_URL}={self.url}")


def _require_local() -> None:
    if os.environ.get(ENV_URL):
        pytest.skip(f"{ENV_URL} is set: tests that stop or configure a broker need a local one")
    try:
        find_mosquitto()
    except MosquittoError as error:
        pytest.skip(str(error))


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start local brokers with extra config lines: ``mosquitto_factory(["password_file ..."])``.

    Every broker started is stopped after the test.
    """
    _require_local()
    started: list[Mosquitto] = []

    def start(extra_config: Sequence[str] = ()) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(started)}", extra_config=extra_config)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def local_mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A broker this test started and may stop and start again (same port)."""
    return mosquitto_factory()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto | ExternalBroker]:
    """The broker under test: ``$LOGSTREAM_TEST_MQTT_URL`` or a local one on a free port."""
    url = os.environ.get(ENV_URL)
    if url:
        yield ExternalBroker(url)
        return
    try:
        find_mosquitto()
    except MosquittoError as error:
        pytest.skip(str(error))
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def mqtt_topic_root() -> str:
    """A topic prefix of this test's own, so tests sharing a broker never see each other."""
    return f"logstream-test/{secrets.token_hex(6)}"


# --------------------------------------------------------------------------- subscriber


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return orjson.loads(self.payload)


class Subscriber:
    """A real paho client subscribed (QoS 1) to ``topic_filter``, collecting what arrives.

    Collection happens on paho's thread; ``messages`` and ``wait_for`` are
    safe from any thread.
    """

    def __init__(
        self,
        url: str,
        topic_filter: str,
        *,
        protocol: str = "5",
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        timeout_secs: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        self.topic_filter = topic_filter
        self._messages: list[Received] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"logstream-test-sub-{secrets.token_hex(4)}",
            protocol=MQTTProtocolVersion.MQTTv5
            if protocol == "5"
            else MQTTProtocolVersion.MQTTv311,
        )
        if username is None and parts.username:  # an external broker's URL may carry them
            username, password = unquote(parts.username), unquote(parts.password or "")
        if username is not None:
            self.client.username_pw_set(username, password)
        if parts.scheme == "mqtts":
            self.client.tls_set(ca_certs=ca_certs)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=1)
        if not self._subscribed.wait(timeout_secs):
            self.close()
            raise TimeoutError(f"no SUBACK for {topic_filter!r} from {url} in {timeout_secs} s")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = Received(
            message.topic, bytes(message.payload), message.qos, bool(message.retain)
        )
        with self._changed:
            self._messages.append(received)
            self._changed.notify_all()

    @property
    def messages(self) -> list[Received]:
        with self._changed:
            return list(self._messages)

    def wait_for(self, count: int, timeout_secs: float = 5.0) -> list[Received]:
        """All messages once at least ``count`` arrived; AssertionError after the timeout."""
        deadline = time.monotonic() + timeout_secs
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.topic_filter}: expected {count} messages within {timeout_secs} s, "
                        f"got {len(self._messages)}: {self._messages[:5]}"
                    )
                self._changed.wait(left)
            return list(self._messages)

    def wait_quiet(self, quiet_secs: float = 0.3, timeout_secs: float = 10.0) -> list[Received]:
        """All messages once none has arrived for ``quiet_secs`` (for an unknown count)."""
        deadline = time.monotonic() + timeout_secs
        with self._changed:
            # wait() is True when a message arrived (notify), False after quiet_secs of none.
            while self._changed.wait(quiet_secs) and time.monotonic() < deadline:
                pass
            return list(self._messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., Subscriber]]:
    """``mqtt_subscriber(url, "logs/#", protocol="5")`` -> a connected :class:`Subscriber`."""
    subscribers: list[Subscriber] = []

    def subscribe(url: str, topic_filter: str, **options: Any) -> Subscriber:
        subscriber = Subscriber(url, topic_filter, **options)
        subscribers.append(subscriber)
        return subscriber

    yield subscribe
    for subscriber in subscribers:
        subscriber.close()


def contract_destination(
    request: pytest.FixtureRequest,
) -> tuple[dict[str, Any], Callable[[], list[dict[str, Any]]]]:
    """For the sink contract suite: an mqtt sink config and a reader of what arrived.

    The events go to one topic per host and level at QoS 1 (so order is kept
    and ``close`` waits for the broker's acknowledgements).
    """
    broker = request.getfixturevalue("mosquitto")
    root = request.getfixturevalue("mqtt_topic_root")
    subscriber = request.getfixturevalue("mqtt_subscriber")(broker.url, f"{root}/#")
    config = {"type": "mqtt", "url": broker.url, "topic": f"{root}/{{host}}/{{level}}", "qos": 1}
    return config, lambda: [message.json() for message in subscriber.wait_quiet()]


# --------------------------------------------------------------------------- misbehaving brokers


class BlackHole:
    """A TCP listener that accepts connections and never reads from them.

    With ``answer_connect``, it first reads the client's CONNECT and answers
    with a CONNACK (so the client believes it is connected), then never reads
    again: a broker that stalls. Its receive buffer is made small so a
    writer fills it, and then its own send buffer, quickly.
    """

    def __init__(self, *, answer_connect: bool = False) -> None:
        self.answer_connect = answer_connect
        self.connections: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.host, self.port = self._listener.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="black-hole", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            if self.answer_connect:
                with contextlib.suppress(OSError):
                    _answer_connect(conn)

    def drop_connections(self) -> None:
        """Close every accepted connection (unread data makes the kernel send a reset)."""
        for conn in self.connections:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()
        for conn in self.connections:
            conn.close()


def _answer_connect(conn: socket.socket) -> None:
    """Read one CONNECT packet and send a successful CONNACK for its protocol level."""
    conn.settimeout(2.0)
    header = _read_exactly(conn, 1)
    if header[0] >> 4 != 1:  # not CONNECT
        return
    length, multiplier = 0, 1
    while True:
        byte = _read_exactly(conn, 1)[0]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    body = _read_exactly(conn, length)
    name_length = int.from_bytes(body[:2], "big")
    level = body[2 + name_length]
    # CONNACK: no session present, success; MQTT 5 adds an empty property list.
    conn.sendall(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")


def _read_exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed while reading CONNECT")
        data += chunk
    return data


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    """A listener on a free port that accepts and never reads (no CONNACK either)."""
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def stalled_broker() -> Iterator[BlackHole]:
    """A listener that answers CONNECT with CONNACK, then never reads again."""
    hole = BlackHole(answer_connect=True)
    yield hole
    hole.close()


def arrival_stamps(stdout: str, topic: str) -> list[tuple[float, float]]:
    """(receive time, MQTT 3.1.1 QoS 0 wire bytes) of each message from the output of
    ``mosquitto_sub -F "%U %l" -t TOPIC``."""
    from logstream.sinks.mqtt import wire_size

    arrivals = []
    for line in stdout.splitlines():
        stamp, length = line.split(" ")
        arrivals.append((float(stamp), float(wire_size(len(topic), int(length), 0, None))))
    return arrivals


def draining(receiver: Any) -> Callable[[], str]:
    """Read ``receiver``'s stdout (a ``mosquitto_sub`` started with ``text=True``) as it
    comes, so a full pipe never stalls it and bunches its stamps; the returned call
    terminates it and gives everything it printed."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(receiver.stdout), daemon=True)
    reader.start()

    def collect() -> str:
        receiver.terminate()
        receiver.wait(timeout=5)
        reader.join(timeout=5)
        return "".join(lines)

    return collect
