"""The ``mqtt`` sink: events published to an MQTT broker on topics made from event fields.

::

    sinks:
      - type: mqtt
        url: "mqtts://broker.example:8883"      # user:password@ allowed, or username/password
        username: "${MQTT_USERNAME}"
        password: "${MQTT_PASSWORD}"
        topic: "logs/{host}/{level}"            # each {field} is sanitised, "_" when missing
        qos: 0

How a batch travels::

    write(batch) -> group events by topic -> encoder: one payload per message
        -> paho publish() (network thread writes) -> on_publish -> events_out

The sink never makes the pipeline wait on MQTT. paho queues QoS 0 packets in
an unbounded deque and QoS 1 messages in an unbounded dict, so the sink bounds
them itself: it tracks every message handed to paho until paho reports it
written (QoS 0) or acknowledged (QoS 1), and while ``max_outstanding_messages``
or ``max_outstanding_bytes`` is reached it drops and counts
(``broker_backpressure``). While not connected it drops and counts
(``not_connected``); paho reconnects in the background with a backoff.
``events_out`` and ``bytes_out`` count what paho reported sent, not what was
handed to it.

Threads: paho's network thread (``loop_start``) only appends to an inbox and
wakes the event loop with ``call_soon_threadsafe``; every counter and every
piece of sink state is touched on the event loop only.

Topics are templates compiled at build time into a function of the event:
literal parts are checked once, field values are sanitised on every event
(cached, since hosts and levels repeat) so event data can never produce a
wildcard, an extra level, a ``$`` topic or a character mosquitto rejects
(it disconnects a client that publishes a control character in a topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field, SecretStr, field_validator, model_validator

from logstream.event import Batch, Event
from logstream.metrics import UnitMetrics
from logstream.units import BuildContext, Sink, SinkConfig, WhenFull

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- topic templates

# Characters event data may not put into a topic segment, each replaced by "_":
# the level separator, the wildcards, and what MQTT forbids or mosquitto
# refuses in UTF-8 strings: control characters (C0, DEL, C1), surrogates and
# Unicode non-characters.
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17)
)
_FORBIDDEN = f"\x00-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}"
_UNSAFE_IN_SEGMENT = re.compile(f"[/+#{_FORBIDDEN}]")
_UNSAFE_IN_LITERAL = re.compile(f"[+#{_FORBIDDEN}]")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_@.\-]+")
# Distinct field values remembered with their sanitised form (per field position).
_SEGMENT_CACHE_MAX = 4096

TopicFunction = Callable[[Event], str]


def parse_topic(template: str) -> tuple[list[str], list[str]]:
    """Split ``"logs/{host}/{level}"`` into literals ``["logs/", "/", ""]`` and
    fields ``["host", "level"]`` (always one more literal than fields).

    Raises ``ValueError`` saying what is wrong and where.
    """
    if not template:
        raise ValueError("the topic template is empty")
    literals: list[str] = []
    fields: list[str] = []
    position = 0
    while True:
        start = template.find("{", position)
        literal = template[position:] if start < 0 else template[position:start]
        if "}" in literal:
            raise ValueError(
                f"'}}' without a matching '{{' at {position + literal.index('}')}; "
                "braces may only enclose a field name"
            )
        _check_literal(literal, first=not literals)
        literals.append(literal)
        if start < 0:
            return literals, fields
        end = template.find("}", start + 1)
        if end < 0:
            raise ValueError(f"'{{' at {start} is not closed by '}}'")
        name = template[start + 1 : end]
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(
                f"field name {name!r} at {start} is empty or not made of letters, digits "
                "and _ @ . - only"
            )
        fields.append(name)
        position = end + 1


def _check_literal(literal: str, *, first: bool) -> None:
    bad = _UNSAFE_IN_LITERAL.search(literal)
    if bad is not None:
        char = bad.group()
        if char in "+#":
            raise ValueError(f"{char!r} in {literal!r} is an MQTT wildcard; topics cannot have one")
        raise ValueError(f"{char!r} in {literal!r} is not allowed in an MQTT topic")
    if first and literal.startswith("$"):
        raise ValueError(f"topics starting with '$' are reserved for the broker ({literal!r})")


def check_segment(value: str, key: str) -> str:
    """Check a replacement segment (the ``missing`` setting); return it."""
    if not value or _UNSAFE_IN_SEGMENT.search(value) or value.startswith("$"):
        raise ValueError(
            f"{key} must be a non-empty topic level without / + # $ or control characters"
        )
    return value


def compile_topic(template: str, missing: str = "_") -> TopicFunction:
    """The function ``event -> topic`` for ``template``, chosen once here.

    A field's value is used as one topic level: ``/``, ``+``, ``#`` and
    characters MQTT forbids become ``_``; a missing, ``None``, empty or
    non-scalar value becomes ``missing``; a template starting with a field
    gets a leading ``$`` replaced (``$`` topics belong to the broker).
    Raises ``ValueError`` for a bad template.
    """
    literals, fields = parse_topic(template)
    check_segment(missing, "missing")
    if not fields:
        constant = literals[0]
        return lambda event: constant
    # The literals hold no braces (parse_topic checked), so "{}" joins them
    # into a format string with one positional slot per field.
    fmt = "{}".join(literals).format
    seg = _segment_function(missing, leading_dollar=False)
    first = _segment_function(missing, leading_dollar=literals[0] == "")
    if len(fields) == 1:
        (f0,) = fields
        return lambda event: fmt(first(event.get(f0)))
    if len(fields) == 2:
        f0, f1 = fields
        return lambda event: fmt(first(event.get(f0)), seg(event.get(f1)))
    head, rest = fields[0], fields[1:]
    return lambda event: fmt(first(event.get(head)), *[seg(event.get(f)) for f in rest])


def _segment_function(missing: str, *, leading_dollar: bool) -> Callable[[Any], str]:
    cache: dict[str, str] = {}
    unsafe_sub = _UNSAFE_IN_SEGMENT.sub

    def slow(value: Any) -> str:
        if type(value) is str:
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = str(value)
        else:  # None, a list, an object: nothing sensible to name a level after
            return missing
        if not text:
            return missing
        result = unsafe_sub("_", text)
        if leading_dollar and result.startswith("$"):
            result = "_" + result[1:]
        if type(value) is str:
            if len(cache) >= _SEGMENT_CACHE_MAX:
                cache.clear()
            cache[value] = result
        return result

    get = cache.get

    def segment(value: Any) -> str:
        # Only str values are cached: 1, 1.0 and True are equal dict keys.
        if type(value) is str:
            hit = get(value)
            if hit is not None:
                return hit
        return slow(value)

    return segment


# --------------------------------------------------------------------------- encoders

# One MQTT message: its payload and the number of events it carries.
Message = tuple[bytes, int]


class Encoder(Protocol):
    """Turns the events of one topic into MQTT payloads (one per message).

    Built once per sink with the sink's metrics; counts the events it cannot
    encode (``encode_error``) and leaves them out. Must not raise for bad events.
    """

    def encode(self, events: list[Event]) -> list[Message]: ...


class JsonEncoder:
    """One JSON object per message (``encoding: json``)."""

    def __init__(self, metrics: UnitMetrics) -> None:
        self.metrics = metrics

    def encode(self, events: list[Event]) -> list[Message]:
        dumps = orjson.dumps
        try:
            return [(dumps(event), 1) for event in events]
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
        messages = []
        for event in events:
            try:
                messages.append((dumps(event, option=orjson.OPT_NON_STR_KEYS), 1))
            except TypeError:
                self.metrics.drop(1, "encode_error")
        return messages


ENCODERS: dict[str, Callable[[UnitMetrics], Encoder]] = {"json": JsonEncoder}

# --------------------------------------------------------------------------- config

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where the broker is, from ``url``."""

    host: str
    port: int
    tls: bool


def parse_url(url: str) -> Endpoint:
    """``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883), without credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("url must start with mqtt:// or mqtts://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url: credentials are taken out of the url before this point")
    if not parts.hostname:
        raise ValueError("url has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("url may not have a path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("url port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("url port must be a number from 1 to 65535")
    tls = parts.scheme == "mqtts"
    return Endpoint(parts.hostname, port or (8883 if tls else 1883), tls)


class MqttSinkConfig(SinkConfig):
    """Publish events to an MQTT broker, one JSON event per message.

    Credentials in the url (``mqtt://user:password@host``) are moved to
    ``username`` / ``password`` when the config is read, so ``url`` never
    holds a secret.
    """

    type: Literal["mqtt"]
    url: str = Field(description="mqtt://host[:port] or mqtts://host[:port] (1883 / 8883).")
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = Field(
        default=None, description="CA certificates for mqtts (default: the system's)."
    )
    client_id: str | None = Field(default=None, description="Default: logstream-<random>.")
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_secs: int = Field(default=30, ge=5, le=65_535)
    topic: str = Field(description="Template, e.g. logs/{host}/{level}.")
    missing: str = Field(default="_", description="Topic level used for a missing or empty field.")
    qos: Literal[0, 1] = 0
    retain: bool = False
    encoding: Literal["json"] = "json"
    max_outstanding_messages: int = Field(
        default=10_000,
        ge=1,
        le=65_000,  # below paho's 65535 message ids, so a tracked id is never reused
        description="Messages handed to paho but not yet written (QoS 0) or acknowledged (QoS 1).",
    )
    max_outstanding_bytes: int = Field(
        default=16 * _MIB, ge=1, description="Payload bytes of those messages at most."
    )
    connect_wait_secs: float = Field(
        default=3.0, ge=0, description="How long start() waits for the first connection."
    )
    reconnect_min_delay_secs: int = Field(default=1, ge=1)
    reconnect_max_delay_secs: int = Field(default=30, ge=1)
    close_timeout_secs: float = Field(
        default=5.0, ge=0, description="How long close() waits for outstanding messages."
    )
    when_full: WhenFull = Field(
        default="drop_newest",
        description="drop_newest: a slow broker never stalls the pipeline; block: it does.",
    )

    @model_validator(mode="before")
    @classmethod
    def _take_credentials_out_of_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        scheme, sep, rest = data["url"].partition("://")
        netloc, slash, tail = rest.partition("/")
        userinfo, at, hostport = netloc.rpartition("@")
        if not sep or not at:
            return data
        user, _, password = userinfo.partition(":")
        data = {**data, "url": f"{scheme}://{hostport}{slash}{tail}"}
        for key, value in (("username", unquote(user)), ("password", unquote(password))):
            if not value:
                continue
            if data.get(key):
                raise ValueError(f"{key} is given both in url and as {key}: give it once")
            data[key] = value
        return data

    @field_validator("username", "password", "client_id", "ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # "${MQTT_USERNAME:-}" in a shipped config means: no user name.
        return None if value == "" else value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as a number.
        return "5" if value == 5 and not isinstance(value, bool) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parse_url(value)
        return value

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        parse_topic(value)
        return value

    @field_validator("missing")
    @classmethod
    def _check_missing(cls, value: str) -> str:
        return check_segment(value, "missing")

    @model_validator(mode="after")
    def _check_combinations(self) -> MqttSinkConfig:
        if self.ca_file is not None and not self.url.startswith("mqtts://"):
            raise ValueError(f"ca_file is only used with an mqtts:// url, value: {self.url!r}")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.reconnect_min_delay_secs > self.reconnect_max_delay_secs:
            raise ValueError(
                "reconnect_min_delay_secs must not exceed reconnect_max_delay_secs, values: "
                f"{self.reconnect_min_delay_secs} > {self.reconnect_max_delay_secs}"
            )
        return self

    def build(self, name: str, ctx: BuildContext) -> MqttSink:
        return MqttSink(self, name, ctx)


# --------------------------------------------------------------------------- runtime

# What paho's network thread tells the event loop (the first item of an inbox tuple).
_PUBLISHED = 0  # (_PUBLISHED, mid, failed, reason)
_CONNECTED = 1  # (_CONNECTED, failed, reason)
_DISCONNECTED = 2  # (_DISCONNECTED, reason)
_CONNECT_FAILED = 3  # (_CONNECT_FAILED,)  the TCP/TLS connection could not be opened


class MqttSink(Sink):
    def __init__(self, config: MqttSinkConfig, name: str, ctx: BuildContext) -> None:
        super().__init__(name, ctx.registry.unit(name, "sink"))
        self.config = config
        self.endpoint = parse_url(config.url)
        self._ssl_context = _ssl_context(config) if self.endpoint.tls else None
        self._topic_of = compile_topic(config.topic, config.missing)
        self._group = self._group_constant if "{" not in config.topic else self._group_by_topic
        self._encoder = ENCODERS[config.encoding](self.metrics)
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_event = asyncio.Event()
        self._closing = False
        # mid -> (events, payload bytes) of messages paho has not reported sent.
        self._pending: dict[int, tuple[int, int]] = {}
        self._pending_bytes = 0
        self._idle = asyncio.Event()  # set while nothing is pending
        self._idle.set()
        # With when_full: block, write() waits for room while connected (the
        # runner's buffer then fills and the inputs pause) instead of dropping.
        self._wait_for_room = config.when_full == "block"
        self._room = asyncio.Event()  # set by _drain when a message is sent
        # Filled by paho's thread, emptied by _drain on the loop.
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._drain_scheduled = False
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ state, for tests and health

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def outstanding_messages(self) -> int:
        return len(self._pending)

    @property
    def outstanding_bytes(self) -> int:
        return self._pending_bytes

    async def wait_connected(self, timeout_secs: float) -> bool:
        """Wait until the client is connected; False if it was not within the time."""
        if self._connected:
            return True
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout_secs)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start paho's network thread connecting in the background.

        Waits up to ``connect_wait_secs`` for the first connection so the first
        events are not dropped, then returns connected or not (paho goes on
        trying with a backoff).
        """
        config = self.config
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"logstream-{secrets.token_hex(6)}",
            protocol=MQTTProtocolVersion.MQTTv5
            if config.protocol == "5"
            else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=True,
        )
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, password)
        client.reconnect_delay_set(config.reconnect_min_delay_secs, config.reconnect_max_delay_secs)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self.endpoint.host, self.endpoint.port, config.keepalive_secs)
        self._client = client
        client.loop_start()
        if config.connect_wait_secs and not await self.wait_connected(config.connect_wait_secs):
            log.warning(
                "sink %s: not connected to %s after %.1f s; dropping events (not_connected) "
                "until it is",
                self.name,
                self._where(),
                config.connect_wait_secs,
            )

    async def write(self, batch: Batch) -> None:
        """Hand the batch to paho without waiting for the network; drop and count what cannot go."""
        client = self._client
        if client is None or not self._connected:
            self.metrics.drop(len(batch), "not_connected")
            return
        publish = client.publish
        qos = self.config.qos
        retain = self.config.retain
        max_messages = self.config.max_outstanding_messages
        max_bytes = self.config.max_outstanding_bytes
        pending = self._pending
        drop = self.metrics.drop
        for topic, events in self._group(batch).items():
            if self._full() and not await self._room_for(1):  # do not even encode
                drop(len(events), "broker_backpressure")
                continue
            messages = self._encoder.encode(events)
            for index, (payload, count) in enumerate(messages):
                size = len(payload)
                if (
                    len(pending) >= max_messages
                    or (self._pending_bytes + size > max_bytes and pending)
                ) and not await self._room_for(size):
                    drop(sum(n for _, n in messages[index:]), "broker_backpressure")
                    break
                try:
                    info = publish(topic, payload, qos, retain)
                except ValueError as error:  # a topic over 65535 bytes, a payload over 256 MB
                    drop(count, "rejected")
                    self._warn_once("publish", "sink %s: message rejected: %s", self.name, error)
                    continue
                rc = info.rc
                if rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
                    # [2] paho lost the connection after the last _drain: not queued.
                    drop(count, "not_connected")
                    continue
                if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    # MQTT_ERR_QUEUE_SIZE; a QoS 1 message with NO_CONN is kept by
                    # paho and sent after reconnecting, so it is pending like any other.
                    drop(count, "broker_backpressure")
                    continue
                pending[info.mid] = (count, size)
                self._pending_bytes += size
        if pending:
            self._idle.clear()

    async def _room_for(self, size: int) -> bool:
        """With ``when_full: block``, wait while connected until one more message of
        ``size`` bytes fits; False at once without block, or once disconnected."""
        if not self._wait_for_room:
            return False
        max_messages = self.config.max_outstanding_messages
        max_bytes = self.config.max_outstanding_bytes
        while self._connected and not self._closing:
            pending = self._pending
            if len(pending) < max_messages and (
                not pending or self._pending_bytes + size <= max_bytes
            ):
                return True
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 1.0)
        return False

    def _full(self) -> bool:
        """No room for another message, or for one of the average size of those pending."""
        count = len(self._pending)
        return count >= self.config.max_outstanding_messages or (
            count > 0
            and self._pending_bytes * (count + 1) > self.config.max_outstanding_bytes * count
        )

    def _group_by_topic(self, batch: Batch) -> dict[str, list[Event]]:
        topic_of = self._topic_of
        groups: dict[str, list[Event]] = {}
        for event in batch:
            topic = topic_of(event)
            group = groups.get(topic)
            if group is None:
                groups[topic] = [event]
            else:
                group.append(event)
        return groups

    def _group_constant(self, batch: Batch) -> dict[str, list[Event]]:
        return {self.config.topic: batch}

    async def close(self) -> None:
        """Wait up to ``close_timeout_secs`` for outstanding messages, then disconnect.

        Messages still outstanding then are counted as dropped (``shutdown``)
        and logged. Returns within ``close_timeout_secs`` + 6 s at most, also
        when the broker has stopped reading.
        """
        client = self._client
        if client is None:
            return
        self._client = None
        try:
            if self._pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), self.config.close_timeout_secs)
        finally:  # also when cancelled: paho's thread must not outlive the sink
            self._closing = True
            stopper = self._begin_stop(client)
        await self._wait_stopped(stopper)
        self._drain()  # what paho reported before its thread ended
        self._connected = False
        self._connected_event.clear()
        if self._pending:
            events = sum(count for count, _ in self._pending.values())
            self.metrics.drop(events, "shutdown")
            log.warning(
                "sink %s: %d events in %d messages were not confirmed sent to %s within "
                "close_timeout_secs=%s; counted as dropped (shutdown)",
                self.name,
                events,
                len(self._pending),
                self._where(),
                self.config.close_timeout_secs,
            )
            self._forget_pending()

    def _begin_stop(self, client: mqtt.Client) -> threading.Thread:
        """Disconnect and start stopping paho's thread; return the thread doing it."""
        client.disconnect()
        if self._pending:
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

    async def _wait_stopped(self, stopper: threading.Thread, timeout_secs: float = 6.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        while stopper.is_alive():
            if loop.time() > deadline:
                log.warning("sink %s: paho's network thread did not stop in time", self.name)
                return
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ paho's thread

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._post((_CONNECTED, reason_code.is_failure, str(reason_code)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._post((_CONNECT_FAILED,))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._post((_DISCONNECTED, str(reason_code)))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        failed = reason_code.is_failure
        self._post((_PUBLISHED, mid, failed, str(reason_code) if failed else ""))

    def _post(self, item: tuple[Any, ...]) -> None:
        """Runs on paho's thread: queue ``item`` for the loop and wake it once."""
        self._inbox.append(item)
        loop = self._loop
        if loop is None or self._drain_scheduled:  # [1] races with the reset in _drain
            return
        self._drain_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(self._drain)

    # ------------------------------------------------------------------ the loop's side

    def _drain(self) -> None:
        # [1] Reset before emptying: an item appended after this line schedules a
        # new drain; one appended before it is popped below. None is left behind.
        self._drain_scheduled = False
        inbox = self._inbox
        pending = self._pending
        metrics = self.metrics
        while inbox:
            item = inbox.popleft()
            kind = item[0]
            if kind == _PUBLISHED:
                entry = pending.pop(item[1], None)
                if entry is None:  # forgotten at a disconnect (QoS 0)
                    continue
                events, size = entry
                self._pending_bytes -= size
                if item[2]:
                    metrics.drop(events, "rejected")
                    self._warn_once(
                        "puback", "sink %s: broker refused a message: %s", self.name, item[3]
                    )
                else:
                    metrics.events_out += events
                    metrics.bytes_out += size
                self._room.set()
            elif kind == _CONNECTED:
                self._connection_result(failed=item[1], reason=item[2])
            elif kind == _DISCONNECTED:
                self._disconnected(item[1])
            elif kind == _CONNECT_FAILED:
                self._warn_once(
                    "connect_fail",
                    "sink %s: cannot connect to %s; retrying with back-off",
                    self.name,
                    self._where(),
                )
        if not pending:
            self._idle.set()

    def _connection_result(self, *, failed: bool, reason: str) -> None:
        if failed:
            self._warn_once(
                f"refused:{reason}",
                "sink %s: %s refused the connection: %s; retrying with back-off",
                self.name,
                self._where(),
                reason,
            )
            return
        self._connected = True
        self._connected_event.set()
        self._warned.clear()  # tell about the next outage again
        log.info("sink %s: connected to %s", self.name, self._where())

    def _disconnected(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._connected_event.clear()
        self._room.set()  # a write waiting for room stops waiting and drops
        if self._closing:
            return
        if self.config.qos == 0 and self._pending:
            # paho discards unwritten QoS 0 packets when it reconnects, without
            # an on_publish: they are lost now. (QoS 1 messages are resent.)
            # [2] One published after paho's disconnect but before this line got
            # MQTT_ERR_NO_CONN in write() and was never pending.
            lost = sum(count for count, _ in self._pending.values())
            self.metrics.drop(lost, "not_connected")
            self._forget_pending()
        if was_connected:
            log.warning(
                "sink %s: lost the connection to %s (%s); reconnecting, dropping events "
                "(not_connected) meanwhile",
                self.name,
                self._where(),
                reason,
            )

    def _forget_pending(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        self._idle.set()

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log ``message`` the first time ``key`` happens (until the next connection)."""
        if key in self._warned:
            log.debug(message, *args)
            return
        if len(self._warned) < 100:
            self._warned.add(key)
        log.warning(message, *args)

    def _where(self) -> str:
        scheme = "mqtts" if self.endpoint.tls else "mqtt"
        return f"{scheme}://{self.endpoint.host}:{self.endpoint.port}"


def _ssl_context(config: MqttSinkConfig) -> ssl.SSLContext:
    cafile = str(config.ca_file) if config.ca_file is not None else None
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
