"""The paho connection: the one place where paho's network thread meets the event loop.

paho's thread (``loop_start``) only appends to an inbox and wakes the event
loop with ``call_soon_threadsafe``; every counter and every piece of sink
state is touched on the event loop only (:meth:`Connection.drain`).

paho queues QoS 0 packets in an unbounded deque and QoS 1 messages in an
unbounded dict, so this class bounds them: it tracks every message handed to
paho until paho reports it written (QoS 0) or acknowledged (QoS 1)
(``pending``); the scheduler asks :meth:`Connection.outstanding_full` before
publishing. ``events_out`` and ``bytes_out`` count what paho reported sent
(payload bytes), not what was handed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from logstream.metrics import DropReason, UnitMetrics

from .brokers import Broker
from .config import MqttSinkConfig
from .payloads import Payload

if TYPE_CHECKING:
    from .fanout import Copies

log = logging.getLogger("logstream.sinks.mqtt")

# What paho's network thread tells the event loop (the first item of an inbox tuple).
PUBLISHED = 0  # (PUBLISHED, mid, failed, reason)
CONNECTED = 1  # (CONNECTED, failed, reason, the broker's maximum packet size or None)
DISCONNECTED = 2  # (DISCONNECTED, reason)
CONNECT_FAILED = 3  # (CONNECT_FAILED,)  the TCP/TLS connection could not be opened


class Connection:
    """One paho client, its callbacks, and the messages it has not reported sent.

    ``on_connected(max_packet)`` and ``on_sent()`` run on the event loop (from
    :meth:`drain`): a new connection (with the broker's maximum packet size, if
    it announced one) and a message paho reported sent (room for more).
    """

    def __init__(
        self,
        config: MqttSinkConfig,
        name: str,
        metrics: UnitMetrics,
        broker: Broker,
        *,
        on_connected: Callable[[int | None], None],
        on_sent: Callable[[], None],
        buffer_while_down: bool = False,
    ) -> None:
        self.config = config
        self.name = name
        self.metrics = metrics
        self.broker = broker
        self.endpoint = broker.endpoint
        self.ssl_context = ssl_context(broker.ca_file) if broker.endpoint.tls else None
        self._on_connected_hook = on_connected
        self._on_sent_hook = on_sent
        self.client: mqtt.Client | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connected = False
        self.connected_event = asyncio.Event()
        self.closing = False
        self.broker_max_packet: int | None = None  # from an MQTT 5 CONNACK
        # QoS 1 with several brokers: while down, paho's queue (bounded like ``pending``)
        # keeps the messages for when the broker is back.
        self.buffer_while_down = buffer_while_down and config.qos == 1
        # mid -> (events, payload bytes, the copies it is one of) of messages paho has
        # not reported sent.
        self.pending: dict[int, tuple[int, int, Copies | None]] = {}
        self.pending_bytes = 0
        self.idle = asyncio.Event()  # set while nothing is pending
        self.idle.set()
        self.room = asyncio.Event()  # set by drain when a message is sent
        # Filled by paho's thread, emptied by drain on the loop.
        self.inbox: deque[tuple[Any, ...]] = deque()
        self._drain_scheduled = False
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ the loop's side

    @property
    def ready(self) -> bool:
        """Connected, and not closed: a publish may be handed to paho."""
        return self.client is not None and self.connected

    @property
    def accepts(self) -> bool:
        """A publish may be handed to paho: connected, or buffering while down."""
        return self.client is not None and (
            self.connected or (self.buffer_while_down and not self.closing)
        )

    def start(self) -> None:
        """Start paho's network thread connecting in the background (with a backoff)."""
        config = self.config
        self.loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"logstream-{secrets.token_hex(6)}",
            protocol=MQTTProtocolVersion.MQTTv5
            if config.protocol == "5"
            else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=True,
        )
        if self.ssl_context is not None:
            client.tls_set_context(self.ssl_context)
        if self.broker.username is not None:  # this broker's, or the sink's
            client.username_pw_set(self.broker.username, self.broker.password_text)
        client.reconnect_delay_set(config.reconnect_min_delay_secs, config.reconnect_max_delay_secs)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self.endpoint.host, self.endpoint.port, config.keepalive_secs)
        self.client = client
        client.loop_start()

    async def wait_connected(self, timeout_secs: float) -> bool:
        """Wait until the client is connected; False if it was not within the time."""
        if self.connected:
            return True
        try:
            await asyncio.wait_for(self.connected_event.wait(), timeout_secs)
        except TimeoutError:
            return False
        return True

    def full(self) -> bool:
        """No room for another message, or for one of the average size of those pending."""
        count = len(self.pending)
        return count >= self.config.max_outstanding_messages or (
            count > 0
            and self.pending_bytes * (count + 1) > self.config.max_outstanding_bytes * count
        )

    def outstanding_full(self, size: int) -> bool:
        pending = self.pending
        return len(pending) >= self.config.max_outstanding_messages or bool(
            pending and self.pending_bytes + size > self.config.max_outstanding_bytes
        )

    async def room_for(self, size: int) -> bool:
        """Wait while connected until one more message of ``size`` bytes fits;
        False once disconnected or closing."""
        max_messages = self.config.max_outstanding_messages
        max_bytes = self.config.max_outstanding_bytes
        while self.connected and not self.closing:
            pending = self.pending
            if len(pending) < max_messages and (
                not pending or self.pending_bytes + size <= max_bytes
            ):
                return True
            self.room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room.wait(), 1.0)
        return False

    def lost(self, events: int, reason: DropReason, copies: Copies | None) -> None:
        """Count a message that will not be sent (on the sink, or on this broker)."""
        self.metrics.drop(events, reason)
        if copies is not None:
            copies.lost(reason)

    def publish(self, topic: str, payload: Payload, copies: Copies | None = None) -> None:
        """Hand a message to paho and track it until paho reports it sent."""
        client = self.client
        if client is None:  # pragma: no cover - the scheduler checked
            return
        size = len(payload.data)
        if self.broker_max_packet is not None and payload.wire > self.broker_max_packet:
            self.lost(payload.events, "rejected", copies)
            self.warn_once(
                "max_packet",
                "sink %s: a message of %d bytes is over the broker's maximum packet size %d; "
                "lower max_payload_bytes",
                self.name,
                payload.wire,
                self.broker_max_packet,
            )
            return
        qos = self.config.qos
        try:
            info = client.publish(
                topic, payload.data, qos, self.config.retain, properties=payload.properties
            )
        except ValueError as error:  # a topic over 65535 bytes, a payload over 256 MB
            self.lost(payload.events, "rejected", copies)
            self.warn_once("publish", "sink %s: message rejected: %s", self.name, error)
            return
        rc = info.rc
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            # [2] paho lost the connection after the last drain: not queued.
            self.lost(payload.events, "not_connected", copies)
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # MQTT_ERR_QUEUE_SIZE; a QoS 1 message with NO_CONN is kept by
            # paho and sent after reconnecting, so it is pending like any other.
            self.lost(payload.events, "broker_backpressure", copies)
            return
        self.pending[info.mid] = (payload.events, size, copies)
        self.pending_bytes += size
        self.idle.clear()

    def begin_stop(self, client: mqtt.Client) -> threading.Thread:
        """Disconnect and start stopping paho's thread; return the thread doing it."""
        self.closing = True
        client.disconnect()
        if self.pending:
            # The DISCONNECT packet would queue behind data the broker does not
            # take: shut the socket so paho's thread sees the connection end.
            _shutdown_socket(client)
        # loop_stop() joins paho's thread, which may sit in a reconnect back-off
        # (1 s steps) or a blocking connect (its 5 s timeout): join it on a daemon
        # thread so neither the event loop nor interpreter exit waits on it.
        stopper = threading.Thread(target=client.loop_stop, name=f"mqtt-stop:{self.name}")
        stopper.daemon = True
        stopper.start()
        return stopper

    async def wait_stopped(self, stopper: threading.Thread, timeout_secs: float = 6.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        while stopper.is_alive():
            if loop.time() > deadline:
                log.warning("sink %s: paho's network thread did not stop in time", self.name)
                return
            await asyncio.sleep(0.01)

    def lose_pending(self, reason: DropReason) -> int:
        """Count every pending message as dropped for ``reason``; return the events."""
        lost = 0
        for events, _, copies in self.pending.values():
            lost += events
            self.lost(events, reason, copies)
        self.forget_pending()
        return lost

    def forget_pending(self) -> None:
        self.pending.clear()
        self.pending_bytes = 0
        self.idle.set()

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log ``message`` the first time ``key`` happens (until the next connection)."""
        if key in self._warned:
            log.debug(message, *args)
            return
        if len(self._warned) < 100:
            self._warned.add(key)
        log.warning(message, *args)

    def where(self) -> str:
        scheme = "mqtts" if self.endpoint.tls else "mqtt"
        return f"{scheme}://{self.endpoint.host}:{self.endpoint.port}"

    # ------------------------------------------------------------------ paho's thread

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        maximum = getattr(properties, "MaximumPacketSize", None) if properties else None
        self._post((CONNECTED, reason_code.is_failure, str(reason_code), maximum))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._post((CONNECT_FAILED,))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._post((DISCONNECTED, str(reason_code)))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        failed = reason_code.is_failure
        self._post((PUBLISHED, mid, failed, str(reason_code) if failed else ""))

    def _post(self, item: tuple[Any, ...]) -> None:
        """Runs on paho's thread: queue ``item`` for the loop and wake it once."""
        self.inbox.append(item)
        loop = self.loop
        if loop is None or self._drain_scheduled:  # [1] races with the reset in drain
            return
        self._drain_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(self.drain)

    # ------------------------------------------------------------------ back on the loop

    def drain(self) -> None:
        """What paho's thread posted: sent messages, connections made and lost."""
        # [1] Reset before emptying: an item appended after this line schedules a
        # new drain; one appended before it is popped below. None is left behind.
        self._drain_scheduled = False
        inbox = self.inbox
        pending = self.pending
        metrics = self.metrics
        while inbox:
            item = inbox.popleft()
            kind = item[0]
            if kind == PUBLISHED:
                entry = pending.pop(item[1], None)
                if entry is None:  # forgotten at a disconnect (QoS 0)
                    continue
                events, size, copies = entry
                self.pending_bytes -= size
                if item[2]:
                    self.lost(events, "rejected", copies)
                    self.warn_once(
                        "puback", "sink %s: broker refused a message: %s", self.name, item[3]
                    )
                else:
                    metrics.events_out += events
                    metrics.bytes_out += size
                    if copies is not None:
                        copies.sent(size)
                self.room.set()
                self._on_sent_hook()
            elif kind == CONNECTED:
                self._connection_result(failed=item[1], reason=item[2], max_packet=item[3])
            elif kind == DISCONNECTED:
                self._disconnected(item[1])
            elif kind == CONNECT_FAILED:
                self.warn_once(
                    "connect_fail",
                    "sink %s: cannot connect to %s; retrying with back-off",
                    self.name,
                    self.where(),
                )
        if not pending:
            self.idle.set()

    def _connection_result(self, *, failed: bool, reason: str, max_packet: int | None) -> None:
        if failed:
            self.warn_once(
                f"refused:{reason}",
                "sink %s: %s refused the connection: %s; retrying with back-off",
                self.name,
                self.where(),
                reason,
            )
            return
        self.connected = True
        self.connected_event.set()
        self.broker_max_packet = max_packet if isinstance(max_packet, int) else None
        self._on_connected_hook(self.broker_max_packet)
        self._warned.clear()  # tell about the next outage again
        log.info("sink %s: connected to %s", self.name, self.where())

    def _disconnected(self, reason: str) -> None:
        was_connected = self.connected
        self.connected = False
        self.connected_event.clear()
        self.room.set()  # a write waiting for room stops waiting and drops
        if self.closing:
            return
        if self.config.qos == 0 and self.pending:
            # paho discards unwritten QoS 0 packets when it reconnects, without
            # an on_publish: they are lost now. (QoS 1 messages are resent.)
            # [2] One published after paho's disconnect but before this line got
            # MQTT_ERR_NO_CONN in publish() and was never pending.
            self.lose_pending("not_connected")
        if was_connected:
            log.warning(
                "sink %s: lost the connection to %s (%s); reconnecting, dropping events "
                "(not_connected) meanwhile",
                self.name,
                self.where(),
                reason,
            )


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    cafile = str(ca_file) if ca_file is not None else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"ca_file: cannot load CA certificates, value: {cafile!r}: {error}"
        ) from None


def _shutdown_socket(client: mqtt.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        with contextlib.suppress(OSError):  # paho closed it meanwhile
            sock.shutdown(socket.SHUT_RDWR)
