"""A subscriber that records every log message and the broker's own ``$SYS`` byte counters.

It only records (receive time, topic, payload, properties) on paho's network
thread; decoding happens after the run, so the subscriber costs the
measured pipeline as little CPU as possible.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

SYS_BYTES = "$SYS/broker/bytes/received"
SYS_MESSAGES = "$SYS/broker/messages/received"
# mosquitto publishes a $SYS value only when it changed: an empty message here
# makes sure the next update comes. Its bytes are known (PING_WIRE_BYTES).
PING_TOPIC = "logstream-bench/ping"
# A QoS 0 MQTT 5 PUBLISH with no payload: fixed header 2, topic 2 + 20, properties 1.
PING_WIRE_BYTES = 2 + 2 + len(PING_TOPIC) + 1


@dataclass
class Received:
    """One message as the subscriber got it."""

    at: float  # time.time() on arrival
    topic: str
    payload: bytes
    content_type: str | None
    properties: dict[str, str]
    properties_bytes: int  # the packed MQTT 5 properties as forwarded (1 when none)


@dataclass
class SysSample:
    """One ``$SYS`` update: when it arrived and the broker's totals then."""

    at: float
    bytes_received: int
    messages_received: int


@dataclass
class Probe:
    """Subscribes to ``topic_filter`` and the broker's received-bytes/messages totals."""

    host: str
    port: int
    topic_filter: str = "logs/#"
    messages: list[Received] = field(default_factory=list)
    sys_samples: list[SysSample] = field(default_factory=list)
    _client: mqtt.Client | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _subscribed: bool = False
    _sys: dict[str, int] = field(default_factory=dict)
    last_message_at: float = 0.0
    pings: int = 0

    def start(self, timeout_secs: float = 10.0) -> None:
        """Connect, subscribe, and return once the first ``$SYS`` totals arrived."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"logstream-bench-{secrets.token_hex(4)}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect(self.host, self.port, keepalive=60)
        client.loop_start()
        self._client = client
        if not self.wait_sys_after(0.0, timeout_secs):
            self.stop()
            raise TimeoutError(
                f"no $SYS update from the broker at {self.host}:{self.port} within "
                f"{timeout_secs} s (is sys_interval set?)"
            )

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(self.topic_filter, 0), (SYS_BYTES, 0), (SYS_MESSAGES, 0)])

    def _on_subscribe(self, *_: Any) -> None:
        with self._changed:
            self._subscribed = True
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        topic = message.topic
        if topic.startswith("$SYS/"):
            self._on_sys(now, topic, bytes(message.payload))
            return
        props = message.properties
        content_type = getattr(props, "ContentType", None) if props is not None else None
        user = (getattr(props, "UserProperty", None) or []) if props is not None else []
        self.messages.append(
            Received(
                now,
                topic,
                bytes(message.payload),
                content_type,
                {str(k): str(v) for k, v in user},
                len(props.pack()) if props is not None else 1,  # type: ignore[no-untyped-call]
            )
        )
        self.last_message_at = now

    def _on_sys(self, now: float, topic: str, payload: bytes) -> None:
        try:
            value = int(payload)
        except ValueError:
            return
        with self._changed:
            self._sys[topic] = value
            # mosquitto publishes both totals together each interval: a sample is
            # complete when both arrived since the previous one.
            if len(self._sys) == 2:
                self.sys_samples.append(
                    SysSample(now, self._sys[SYS_BYTES], self._sys[SYS_MESSAGES])
                )
                self._sys = {}
                self._changed.notify_all()

    def wait_sys_after(self, moment: float, timeout_secs: float = 5.0) -> SysSample | None:
        """The first ``$SYS`` sample that arrived after ``moment`` (time.time()), waiting
        for one up to ``timeout_secs``; None when none came."""
        deadline = time.monotonic() + timeout_secs
        if self._client is not None and moment:
            self._client.publish(PING_TOPIC, b"", qos=0)
            self.pings += 1
        with self._changed:
            while True:
                for sample in reversed(self.sys_samples):
                    if sample.at > moment:
                        return next(s for s in self.sys_samples if s.at > moment)
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def wait_quiet(self, quiet_secs: float = 0.5, timeout_secs: float = 30.0) -> None:
        """Wait until no log message arrived for ``quiet_secs`` (or ``timeout_secs`` passed)."""
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if time.time() - max(self.last_message_at, 0.0) >= quiet_secs:
                return
            time.sleep(0.05)
