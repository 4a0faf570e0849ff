"""The ``mqtt`` sink: events published to an MQTT broker on topics made from event fields.

::

    sinks:
      - type: mqtt
        url: "mqtts://broker.example:8883"      # user:password@ allowed, or username/password
        username: "${MQTT_USERNAME}"
        password: "${MQTT_PASSWORD}"
        topic: "logs/{host}/{level}"            # each {field} is sanitised, "_" when missing
        qos: 0
        encoding: lz4                           # json (default) | ndjson | lz4 | zstd
        rate_limit:
          topic_bytes_per_sec: 50000            # wire bytes after compression, per topic
          total_bytes_per_sec: 200000           # the whole sink

How a batch travels::

    write(batch) -> group events by topic -> per topic:
        [sampler: keep ratios per severity, only with rate_limit]
        -> JSON lines -> payload batcher (max bytes / events / delay; a timer
           task seals partial payloads) -> framed (ndjson, lz4, zstd) or one
           message per event (json)
        -> ready queue -> token buckets (topic, total) -> paho publish()
        -> on_publish -> events_out

Payloads follow the versioned format in ``docs/mqtt-payload.md``
(:mod:`logstream.payload`): MQTT 5 messages carry a content type and user
properties; MQTT 3.1.1 subscribers tell encodings apart by the first bytes.

Bandwidth control (``rate_limit``): each topic and the whole sink may have
token buckets in wire bytes/s and messages/s (:mod:`logstream.ratelimit`),
with a capacity of ``burst_secs`` of the rate, so every 1-second window
carries at most the cap plus ``burst_secs`` of it. Before a bucket runs
dry, the sink's own sampler lowers keep ratios per severity (a
:class:`~logstream.sampling.BudgetController` per capped topic and one for
the total, fed with the measured *compressed wire bytes* per event of each
severity), dropping from the lowest severities first: WARNING and above
are kept while they alone fit. Payloads wait in a short queue (``queue_secs``
of the rate) for tokens, the most severe first; when it overflows the
queued payloads of the lowest severity are dropped and counted
(``rate_limited``) to make room, so the pipeline never waits on a rate
limit. Accounting records are never dropped by a cap (see ``_send_records``).
Kept events that stand for others carry ``sample_rate``; every
``accounting_interval_secs`` each topic that lost events gets an accounting
record saying how many of each severity were ``sampled`` or ``rate_limited``.

The sink never makes the pipeline wait on MQTT. paho queues QoS 0 packets in
an unbounded deque and QoS 1 messages in an unbounded dict, so the sink bounds
them itself: it tracks every message handed to paho until paho reports it
written (QoS 0) or acknowledged (QoS 1), and while ``max_outstanding_messages``
or ``max_outstanding_bytes`` is reached it drops and counts
(``broker_backpressure``). While not connected it drops and counts
(``not_connected``); paho reconnects in the background with a backoff.
``events_out`` and ``bytes_out`` count what paho reported sent (payload
bytes), not what was handed to it.

Threads: paho's network thread (``loop_start``) only appends to an inbox and
wakes the event loop with ``call_soon_threadsafe``; every counter and every
piece of sink state is touched on the event loop only (``write``, and the
sink's own timer task started in ``start`` and stopped in ``close``).

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
import math
import re
import secrets
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from logstream.clock import Clock
from logstream.event import Batch, Event
from logstream.metrics import DropReason
from logstream.payload import (
    CONTENT_TYPES,
    ENCODERS,
    FORMAT_VERSION,
    PROP_ENCODING,
    PROP_EVENTS,
    PROP_RECORD,
    PROP_SAMPLE_RATES,
    PROP_VERSION,
    CompressionEstimate,
    Encoder,
    Framer,
    JsonEncoder,
    Message,
    dumps_event,
    format_sample_rates,
    frame_within,
    framer,
    is_accounting,
    join_lines,
    rate_json,
    serialise,
    with_sample_rate,
)
from logstream.ratelimit import Limiter, TokenBucket
from logstream.sampling import (
    LEVEL_NAMES,
    LEVELS,
    BudgetController,
    LevelIndexer,
    accounting_record,
)
from logstream.severity import Severity, parse_name
from logstream.units import BuildContext, Sink, SinkConfig, WhenFull

__all__ = [
    "ENCODERS",
    "Encoder",
    "JsonEncoder",
    "Message",
    "MqttSink",
    "MqttSinkConfig",
    "compile_topic",
    "payload_properties",
    "wire_size",
]

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


# --------------------------------------------------------------------------- config

_MIB = 1024 * 1024
_MAX_PACKET = 268_435_455  # MQTT's largest remaining length


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicCaps(_Strict):
    """Caps of the topics an MQTT topic filter matches (``rate_limit.topics``)."""

    bytes_per_sec: float | None = Field(default=None, gt=0, description="Wire bytes/s.")
    messages_per_sec: float | None = Field(default=None, gt=0, description="Messages/s.")


class RateLimitConfig(_Strict):
    """Token-bucket caps on what the sink publishes, and the sampling that keeps under them.

    Bytes are wire bytes: the PUBLISH packet with its header, topic and
    properties, after compression.
    """

    topic_bytes_per_sec: float | None = Field(
        default=None, gt=0, description="Cap of every topic (each has its own bucket)."
    )
    topic_messages_per_sec: float | None = Field(default=None, gt=0)
    total_bytes_per_sec: float | None = Field(
        default=None, gt=0, description="Cap of everything the sink publishes."
    )
    total_messages_per_sec: float | None = Field(default=None, gt=0)
    topics: dict[str, TopicCaps] = Field(
        default_factory=dict,
        description="MQTT topic filter -> caps replacing topic_*; the first match wins.",
    )
    burst_secs: float = Field(
        default=0.02,
        gt=0,
        le=10,
        description="Bucket capacity in seconds of the rate: any 1 s window carries at most "
        "cap * (1 + burst_secs). Payloads are kept to half of it.",
    )
    queue_secs: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Payloads waiting for tokens, in seconds of the rate; more are dropped.",
    )
    adaptive: bool = Field(
        default=True,
        description="Lower keep ratios per severity (lowest first) to fit the byte caps "
        "instead of dropping whole payloads.",
    )
    window_secs: float = Field(default=1.0, gt=0, le=60, description="How often ratios change.")
    accounting_interval_secs: float = Field(
        default=10.0, ge=0, description="How often a topic that lost events is told (0: never)."
    )
    level_field: str = Field(default="level", description="The field holding the severity.")
    unknown_level: str = Field(
        default="INFO", description="Severity of events whose level is missing or unknown."
    )

    @field_validator("topics")
    @classmethod
    def _check_filters(cls, value: dict[str, TopicCaps]) -> dict[str, TopicCaps]:
        for topic_filter, caps in value.items():
            check_topic_filter(topic_filter)
            if caps.bytes_per_sec is None and caps.messages_per_sec is None:
                raise ValueError(
                    f"topics.{topic_filter}: give bytes_per_sec and/or messages_per_sec"
                )
        return value

    @field_validator("unknown_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return parse_name(value).name

    @property
    def any_caps(self) -> bool:
        return any(
            value is not None
            for value in (
                self.topic_bytes_per_sec,
                self.topic_messages_per_sec,
                self.total_bytes_per_sec,
                self.total_messages_per_sec,
            )
        ) or bool(self.topics)


def check_topic_filter(topic_filter: str) -> str:
    """An MQTT topic filter: ``+`` a whole level, ``#`` a whole last level."""
    if not topic_filter:
        raise ValueError("a topic filter may not be empty")
    levels = topic_filter.split("/")
    for position, level in enumerate(levels):
        if level in ("+", "#"):
            if level == "#" and position != len(levels) - 1:
                raise ValueError(f"'#' must be the last level of a topic filter: {topic_filter!r}")
        elif "+" in level or "#" in level:
            raise ValueError(
                f"wildcards must fill a whole level of a topic filter: {topic_filter!r}"
            )
    return topic_filter


class MqttSinkConfig(SinkConfig):
    """Publish events to an MQTT broker: one JSON event per message, or batched payloads.

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
    encoding: Literal["json", "ndjson", "lz4", "zstd"] = Field(
        default="json",
        description="json: one event per message; ndjson, lz4, zstd: batched payloads.",
    )
    compression_level: int | None = Field(
        default=None, description="lz4: 0-16 (default 0), zstd: 1-19 (default 3)."
    )
    max_payload_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        le=_MAX_PACKET - 65_536,
        description="Framed payload size at most; keep it below the broker's maximum packet "
        "size (MQTT 5 brokers that announce one lower it further).",
    )
    payload_max_events: int = Field(default=1_000, ge=1, description="Events per payload at most.")
    payload_max_delay_secs: float = Field(
        default=0.2,
        ge=0,
        le=10,
        description="How long a partly filled payload waits for more events of its topic.",
    )
    rate_limit: RateLimitConfig | None = Field(
        default=None, description="Token-bucket caps per topic and in total, with sampling."
    )
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
        if self.compression_level is not None:
            if self.encoding not in ("lz4", "zstd"):
                raise ValueError(
                    "compression_level is only used with encoding lz4 or zstd, value: "
                    f"{self.compression_level} with encoding {self.encoding!r}"
                )
            framer(self.encoding, self.compression_level)  # checks the range, names the key
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
_CONNECTED = 1  # (_CONNECTED, failed, reason, the broker's maximum packet size or None)
_DISCONNECTED = 2  # (_DISCONNECTED, reason)
_CONNECT_FAILED = 3  # (_CONNECT_FAILED,)  the TCP/TLS connection could not be opened

# A topic with nothing pending and no event for this long is forgotten (its buckets too).
_TOPIC_IDLE_SECS = 60.0
# How often the timer task looks at every topic (accounting records, forgetting).
_SWEEP_SECS = 1.0
# Room kept for the packet header, topic and properties below an announced maximum packet size.
_PACKET_MARGIN = 512
# Properties objects kept for reuse (most messages share them).
_PROPERTIES_CACHE_MAX = 512


def wire_size(topic_bytes: int, payload_bytes: int, qos: int, properties_bytes: int | None) -> int:
    """Bytes of one PUBLISH packet on the wire.

    Fixed header (1 byte and the remaining length), topic (2 + its UTF-8
    bytes), packet id with QoS 1, properties (MQTT 5: ``len(Properties.pack())``,
    at least 1; ``None`` for MQTT 3.1.1) and payload.
    """
    remaining = 2 + topic_bytes + (2 if qos else 0) + (properties_bytes or 0) + payload_bytes
    return 1 + _varint_size(remaining) + remaining


def _varint_size(value: int) -> int:
    return 1 if value < 128 else 2 if value < 16_384 else 3 if value < 2_097_152 else 4


@dataclass(slots=True)
class _Payload:
    """One message on its way: framed, with what it costs and what it carries."""

    data: bytes
    events: int  # pipeline events in it (0 for an accounting record the sink made)
    wire: int  # bytes of the PUBLISH packet
    properties: Properties | None
    by_level: list[int] | None  # events per severity index, when the sink tracks levels
    accounting: bool = False
    # The highest severity index in it (a queue that overflows gives up the lowest first);
    # above every severity for an accounting record, which is never given up.
    severity: int = LEVELS - 1


_ONE_HOT: tuple[list[int], ...] = tuple(
    [1 if i == index else 0 for i in range(LEVELS)] for index in range(LEVELS)
)


class _PackedProperties(Properties):
    """Properties packed once: paho packs a message's properties on every
    publish, which cost more than the rest of a one-event message."""

    _packed: bytes = b""

    def seal(self) -> int:
        """Pack the properties as they are now (no change after this); return the size."""
        object.__setattr__(self, "_packed", super().pack())  # type: ignore[no-untyped-call]
        return len(self._packed)

    def pack(self) -> bytes:
        return self._packed or super().pack()  # type: ignore[no-untyped-call]


def payload_properties(
    encoding: str, count: int, sample_rates: str = "", accounting: bool = False
) -> Properties:
    """The MQTT 5 PUBLISH properties of a payload (docs/mqtt-payload.md), packed once."""
    properties = _PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ContentType = CONTENT_TYPES[encoding]
    if encoding in ("json", "ndjson"):
        properties.PayloadFormatIndicator = 1  # UTF-8 text
    user = [
        (PROP_VERSION, str(FORMAT_VERSION)),
        (PROP_ENCODING, encoding),
        (PROP_EVENTS, str(count)),
    ]
    if sample_rates:
        user.append((PROP_SAMPLE_RATES, sample_rates))
    if accounting:
        user.append((PROP_RECORD, "accounting"))
    properties.UserProperty = user
    properties.seal()
    return properties


class _Topic:
    """One topic's state: its partial payload, its ready queue, its caps, sampler and counts."""

    __slots__ = (
        "bytes_cap",
        "controller",
        "created",
        "deadline",
        "estimate",
        "factors",
        "interval_start",
        "interval_start_wall",
        "last_used",
        "levels",
        "limiter",
        "lines",
        "message_wire",
        "messages_cap",
        "name",
        "offered",
        "owed",
        "passed",
        "queue_limit",
        "queued_bytes",
        "rate_limited",
        "rates",
        "ratios",
        "raw",
        "raw_limit",
        "ready",
        "sampled",
        "topic_bytes",
        "topic_ratios",
        "wake_at",
    )

    def __init__(self, name: str, now: float, wall: float) -> None:
        self.name = name
        self.topic_bytes = len(name.encode("utf-8", "surrogatepass"))
        self.lines: list[bytes] = []  # the partial payload, one JSON line per event
        self.levels: list[int] = []  # severity index per line (only when levels are tracked)
        self.raw = 0  # NDJSON bytes of ``lines``
        self.raw_limit = 1 << 62  # NDJSON bytes at which the payload is sealed
        self.deadline: float | None = None  # when the partial payload must go
        self.ready: deque[_Payload] = deque()  # framed, waiting for tokens or room
        self.queued_bytes = 0  # wire bytes in ``ready``
        self.queue_limit = math.inf
        self.wake_at: float | None = None  # when the buckets will have room for ready[0]
        self.limiter = Limiter((), ())
        self.bytes_cap: float | None = None
        self.messages_cap: float | None = None
        self.controller: BudgetController | None = None
        self.estimate = CompressionEstimate()
        self.message_wire = 0.0  # smoothed wire bytes per message
        # Sampling: keep ratio, "owed" fraction, and the sample_rate JSON per severity.
        self.ratios = [1.0] * LEVELS
        self.topic_ratios: list[float] | None = None
        self.owed = [0.0] * LEVELS
        self.rates: list[bytes | None] = [None] * LEVELS
        self.factors = [1.0] * LEVELS
        self.offered = [0] * LEVELS  # this control window
        # This accounting interval: events sampled out, dropped by the limiter, passed on.
        self.sampled = [0] * LEVELS
        self.rate_limited = [0] * LEVELS
        self.passed = [0] * LEVELS
        self.interval_start = now
        self.interval_start_wall = wall
        self.last_used = now
        self.created = now  # its own sampler's first window starts here


class MqttSink(Sink):
    def __init__(self, config: MqttSinkConfig, name: str, ctx: BuildContext) -> None:
        super().__init__(name, ctx.registry.unit(name, "sink"))
        self.config = config
        self.endpoint = parse_url(config.url)
        self._ssl_context = _ssl_context(config) if self.endpoint.tls else None
        self._topic_of = compile_topic(config.topic, config.missing)
        self._group = self._group_constant if "{" not in config.topic else self._group_by_topic
        self._clock: Clock = ctx.clock
        self._framer: Framer = framer(config.encoding, config.compression_level)
        self._batched = self._framer.batched
        self._v5 = config.protocol == "5"
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_event = asyncio.Event()
        self._closing = False
        self._broker_max_packet: int | None = None  # from an MQTT 5 CONNACK
        # mid -> (events, payload bytes) of messages paho has not reported sent.
        self._pending: dict[int, tuple[int, int]] = {}
        self._pending_bytes = 0
        self._idle = asyncio.Event()  # set while nothing is pending
        self._idle.set()
        # With when_full: block, write() waits for room while connected (the
        # runner's buffer then fills and the inputs pause) instead of dropping.
        self._wait_for_room = config.when_full == "block"
        self._room = asyncio.Event()  # set by _drain when a message is sent
        self._blocked = False  # a ready queue waits for room (block only)
        # Filled by paho's thread, emptied by _drain on the loop.
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._drain_scheduled = False
        self._warned: set[str] = set()
        # Topics and the timer task that seals partial payloads and pumps queues.
        self._topics: dict[str, _Topic] = {}
        self._active: dict[str, _Topic] = {}  # with a partial payload or a ready queue
        self._timer: asyncio.Task[None] | None = None
        self._timer_stopping = False
        self._wake = asyncio.Event()
        self._next_wake = math.inf
        self._properties_cache: dict[tuple[int, str, bool], tuple[Properties, int]] = {}
        # Bandwidth control, chosen here: without caps nothing is sampled or tracked.
        limits = config.rate_limit if config.rate_limit and config.rate_limit.any_caps else None
        self._limits = limits
        self._add = self._add_tracked if limits is not None else self._add_plain
        self._level_of = LevelIndexer(
            limits.level_field if limits else "level",
            Severity[limits.unknown_level] if limits else Severity.INFO,
        )
        self._total_limiter_buckets: tuple[list[TokenBucket], list[TokenBucket]] = ([], [])
        self._total_controller: BudgetController | None = None
        self._total_queued = 0
        self._total_queue_limit = math.inf
        self._total_message_wire = 0.0
        now = self._clock.monotonic()
        self._window_start = now
        self._window_end = math.inf
        self._first_window = False  # set while the first control window waits for events
        self._next_sweep = now + _SWEEP_SECS
        if limits is not None:
            self._setup_total(limits)

    def _setup_total(self, limits: RateLimitConfig) -> None:
        clock, burst = self._clock, limits.burst_secs
        if limits.total_bytes_per_sec is not None:
            rate = limits.total_bytes_per_sec
            self._total_limiter_buckets[0].append(TokenBucket(rate, rate * burst, clock))
            self._total_queue_limit = rate * limits.queue_secs
        if limits.total_messages_per_sec is not None:
            rate = limits.total_messages_per_sec
            self._total_limiter_buckets[1].append(TokenBucket(rate, max(1.0, rate * burst), clock))
        if limits.adaptive:
            budget = self._budget(limits.total_bytes_per_sec, limits.total_messages_per_sec, 0.0)
            if budget is not None:
                self._total_controller = BudgetController(budget)
            # The first window starts with the first events (write).
            self._first_window = True

    def _budget(
        self, bytes_per_sec: float | None, messages_per_sec: float | None, message_wire: float
    ) -> float | None:
        """The byte budget a sampler aims at. A message cap counts only for ``json``
        (one event per message); batched payloads hold many events per message."""
        budgets = [bytes_per_sec] if bytes_per_sec is not None else []
        if messages_per_sec is not None and not self._batched:
            budgets.append(messages_per_sec * (message_wire or 300.0))
        return min(budgets) if budgets else None

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

    @property
    def queued_messages(self) -> int:
        """Framed payloads waiting for tokens or for room."""
        return sum(len(state.ready) for state in self._active.values())

    def keep_ratios(self, topic: str) -> dict[str, float]:
        """The current keep ratio of each severity on ``topic`` (1.0: all kept)."""
        state = self._topics.get(topic)
        ratios = state.ratios if state is not None else [1.0] * LEVELS
        return dict(zip(LEVEL_NAMES, ratios, strict=True))

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
        """Start paho's network thread connecting in the background, and the timer task.

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
        self._timer = asyncio.create_task(self._run_timer(), name=f"mqtt-timer:{self.name}")
        if config.connect_wait_secs and not await self.wait_connected(config.connect_wait_secs):
            log.warning(
                "sink %s: not connected to %s after %.1f s; dropping events (not_connected) "
                "until it is",
                self.name,
                self._where(),
                config.connect_wait_secs,
            )

    async def write(self, batch: Batch) -> None:
        """Sample, encode and queue the batch per topic, publishing what the caps allow
        now. Never waits on the network or on a rate limit; with ``when_full:
        block`` it waits for paho to take messages (the pipeline's backpressure)."""
        client = self._client
        if client is None or not self._connected:
            self.metrics.drop(len(batch), "not_connected")
            return
        now = self._clock.monotonic()
        if self._first_window:
            self._begin_windows(now)
        for topic, events in self._group(batch).items():
            if self._full() and not await self._room_for(1):  # do not even encode
                self.metrics.drop(len(events), "broker_backpressure")
                continue
            state = self._topics.get(topic) or self._new_topic(topic, now)
            state.last_used = now
            self._add(state, events, now)
            self._pump(state)
        if self._blocked:
            await self._unblock()

    def _begin_windows(self, now: float) -> None:
        """The first events: start the first control window now, so it measures a
        whole window of load (one started at build time would see a fraction)."""
        self._first_window = False
        limits = self._limits
        self._window_start = now
        self._window_end = now + (limits.window_secs if limits is not None else 1.0)
        for state in self._topics.values():
            state.created = now
        self._schedule(self._window_end)

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

    async def _unblock(self) -> None:
        """``when_full: block``: wait until paho took what the ready queues hold."""
        while self._blocked and self._connected and not self._closing:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 1.0)
            self._blocked = False
            for state in list(self._active.values()):
                self._pump(state)

    def _full(self) -> bool:
        """No room for another message, or for one of the average size of those pending."""
        count = len(self._pending)
        return count >= self.config.max_outstanding_messages or (
            count > 0
            and self._pending_bytes * (count + 1) > self.config.max_outstanding_bytes * count
        )

    def _outstanding_full(self, size: int) -> bool:
        pending = self._pending
        return len(pending) >= self.config.max_outstanding_messages or bool(
            pending and self._pending_bytes + size > self.config.max_outstanding_bytes
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

    # ------------------------------------------------------------------ topics

    def _new_topic(self, name: str, now: float) -> _Topic:
        state = _Topic(name, now, self._clock.time())
        limits = self._limits
        if limits is not None:
            bytes_cap, messages_cap = limits.topic_bytes_per_sec, limits.topic_messages_per_sec
            for topic_filter, caps in limits.topics.items():
                if mqtt.topic_matches_sub(topic_filter, name):
                    bytes_cap, messages_cap = caps.bytes_per_sec, caps.messages_per_sec
                    break
            byte_buckets, message_buckets = [], []
            burst = limits.burst_secs
            if bytes_cap is not None:
                byte_buckets.append(TokenBucket(bytes_cap, bytes_cap * burst, self._clock))
                state.queue_limit = bytes_cap * limits.queue_secs
            if messages_cap is not None:
                message_buckets.append(
                    TokenBucket(messages_cap, max(1.0, messages_cap * burst), self._clock)
                )
            total_bytes, total_messages = self._total_limiter_buckets
            state.limiter = Limiter(
                [*byte_buckets, *total_bytes], [*message_buckets, *total_messages]
            )
            state.bytes_cap, state.messages_cap = bytes_cap, messages_cap
            if limits.adaptive:
                budget = self._budget(bytes_cap, messages_cap, 0.0)
                if budget is not None:
                    state.controller = BudgetController(budget)
            self._start_ratios(state)
        state.raw_limit = state.estimate.raw_limit(self._max_payload(state))
        self._topics[name] = state
        return state

    def _start_ratios(self, state: _Topic) -> None:
        """A new topic samples as the samplers do now, not everything until the next window."""
        own = state.controller.ratios if state.controller is not None else None
        total = self._total_controller.ratios if self._total_controller is not None else None
        if own is None and total is None:
            return
        state.topic_ratios = list(own) if own is not None else None
        self._set_ratios(
            state,
            [
                (own[i] if own is not None else 1.0) * (total[i] if total is not None else 1.0)
                for i in range(LEVELS)
            ],
        )

    def _max_payload(self, state: _Topic) -> int:
        """The framed payload size a topic's payloads are kept under."""
        limit = self.config.max_payload_bytes
        # Fixed header, topic, packet id and (MQTT 5) properties, roughly.
        overhead = 7 + state.topic_bytes + (120 if self._v5 else 0)
        if state.limiter:
            # Half a bucket, so a wake-up that comes a little late loses no tokens.
            limit = min(limit, int(state.limiter.max_message_bytes / 2) - overhead)
        if self._broker_max_packet is not None:
            limit = min(limit, self._broker_max_packet - _PACKET_MARGIN - state.topic_bytes)
        return max(64, limit)

    def _add_plain(self, state: _Topic, events: list[Event], now: float) -> None:
        """No caps: every event goes (no levels tracked, nothing sampled)."""
        lines = serialise(events, self.metrics)
        if not self._batched:
            for line in lines:
                self._enqueue(state, self._payload(state, line, 1, None))
            return
        self._collect(state, lines, None, now)

    def _add_tracked(self, state: _Topic, events: list[Event], now: float) -> None:
        """Caps: count offered events per severity, sample, add ``sample_rate``."""
        level_of = self._level_of
        ratios, owed, rates, factors = state.ratios, state.owed, state.rates, state.factors
        offered, sampled, passed = state.offered, state.sampled, state.passed
        lines: list[bytes] = []
        levels: list[int] = []
        left_out = 0
        encode_errors = 0
        top = LEVELS - 1
        for event in events:
            if is_accounting(event):  # a sample filter's record: never sampled
                line = dumps_event(event)
                if line is None:
                    encode_errors += 1
                else:
                    lines.append(line)
                    levels.append(top)
                continue
            index = level_of(event)
            offered[index] += 1
            ratio = ratios[index]
            if ratio < 1.0:
                owing = owed[index] + ratio
                if owing < 1.0 - 1e-9:
                    owed[index] = owing
                    sampled[index] += 1
                    left_out += 1
                    continue
                owed[index] = owing - 1.0
            line = dumps_event(event)
            if line is None:
                encode_errors += 1
                continue
            rate = rates[index]
            if rate is not None:
                line = with_sample_rate(line, event, rate, factors[index])
                if line is None:
                    encode_errors += 1
                    continue
            passed[index] += 1
            lines.append(line)
            levels.append(index)
        if left_out:
            self.metrics.drop(left_out, "sampled")
        if encode_errors:
            self.metrics.drop(encode_errors, "encode_error")
        if self._batched:
            self._collect(state, lines, levels, now)
            return
        for line, index in zip(lines, levels, strict=True):
            payload = self._payload(state, line, 1, _ONE_HOT[index])
            self._measure(state, payload.wire, _ONE_HOT[index], None)
            self._enqueue(state, payload)

    def _collect(
        self, state: _Topic, lines: list[bytes], levels: list[int] | None, now: float
    ) -> None:
        """Add lines to the topic's partial payload; seal it when full."""
        max_events = self.config.payload_max_events
        pending = state.lines
        for position, line in enumerate(lines):
            pending.append(line)
            if levels is not None:
                state.levels.append(levels[position])
            state.raw += len(line) + 1
            if len(pending) >= max_events or state.raw >= state.raw_limit:
                self._seal(state)
                pending = state.lines
        if pending:
            delay = self.config.payload_max_delay_secs
            if not delay:
                self._seal(state)
            elif state.deadline is None:
                state.deadline = now + delay
                self._active[state.name] = state
                self._schedule(state.deadline)

    def _seal(self, state: _Topic) -> None:
        """Frame the partial payload (split when over the size cap) and queue it."""
        lines, levels = state.lines, state.levels
        state.deadline = None
        if not lines:
            return
        state.lines, state.levels, state.raw = [], [], 0
        max_payload = self._max_payload(state)
        messages = frame_within(self._framer, lines, max_payload, state.estimate)
        state.raw_limit = state.estimate.raw_limit(max_payload)
        start = 0
        for data, count in messages:
            by_level: list[int] | None = None
            if levels:
                by_level, raw_by_level = [0] * LEVELS, [0] * LEVELS
                for position in range(start, start + count):
                    index = levels[position]
                    by_level[index] += 1
                    raw_by_level[index] += len(lines[position]) + 1
            payload = self._payload(state, data, count, by_level)
            if by_level is not None:
                self._measure(state, payload.wire, by_level, raw_by_level)
            start += count
            self._enqueue(state, payload)

    def _payload(
        self,
        state: _Topic,
        data: bytes,
        count: int,
        by_level: list[int] | None,
        *,
        accounting: bool = False,
    ) -> _Payload:
        properties, properties_bytes = None, None
        if self._v5:
            rates = ""
            if by_level is not None and any(state.rates):
                rates = format_sample_rates(
                    {
                        LEVEL_NAMES[i]: state.factors[i]
                        for i in range(LEVELS)
                        if state.rates[i] is not None and by_level[i]
                    }
                )
            properties, properties_bytes = self._properties(count, rates, accounting)
        wire = wire_size(state.topic_bytes, len(data), self.config.qos, properties_bytes)
        severity = LEVELS if accounting else LEVELS - 1
        if by_level is not None and not accounting:
            severity = max((i for i in range(LEVELS) if by_level[i]), default=0)
        return _Payload(
            data, 0 if accounting else count, wire, properties, by_level, accounting, severity
        )

    def _properties(self, count: int, rates: str, accounting: bool) -> tuple[Properties, int]:
        """MQTT 5 properties of a payload (docs/mqtt-payload.md), shared when equal."""
        key = (count, rates, accounting)
        cached = self._properties_cache.get(key)
        if cached is not None:
            return cached
        properties = payload_properties(self.config.encoding, count, rates, accounting)
        entry = (properties, len(properties.pack()))  # type: ignore[no-untyped-call]
        if len(self._properties_cache) >= _PROPERTIES_CACHE_MAX:
            self._properties_cache.clear()
        self._properties_cache[key] = entry
        return entry

    def _measure(
        self, state: _Topic, wire: int, by_level: list[int], raw_by_level: list[int] | None
    ) -> None:
        """Tell the samplers what kept events cost in wire bytes, per severity."""
        state.message_wire += 0.2 * (wire - state.message_wire)
        self._total_message_wire += 0.05 * (wire - self._total_message_wire)
        controllers = [c for c in (state.controller, self._total_controller) if c is not None]
        if not controllers:
            return
        if raw_by_level is None:  # one event
            index = by_level.index(1)
            for controller in controllers:
                controller.measure(index, 1, wire)
            return
        raw_total = sum(raw_by_level)
        if not raw_total:
            return
        for index, events in enumerate(by_level):
            if events:
                share = wire * raw_by_level[index] / raw_total
                for controller in controllers:
                    controller.measure(index, events, share)

    # ------------------------------------------------------------------ queues and buckets

    def _enqueue(self, state: _Topic, payload: _Payload) -> None:
        """Queue a payload for its topic. When the queue is full, queued payloads of a
        lower severity are dropped (``rate_limited``), lowest and newest first, to
        make room; if that cannot make room the payload itself is dropped.
        Accounting records are always queued, at the front."""
        if not payload.accounting and not self._make_room(state, payload):
            self._drop_payload(state, payload, "rate_limited")
            return
        if payload.accounting:
            # Before the topic's payloads, after its earlier records (in interval order).
            ready = state.ready
            ready.insert(
                next((i for i, p in enumerate(ready) if not p.accounting), len(ready)), payload
            )
        else:
            state.ready.append(payload)
        state.queued_bytes += payload.wire
        self._total_queued += payload.wire
        self._active[state.name] = state

    def _make_room(self, state: _Topic, payload: _Payload) -> bool:
        """True when ``payload`` fits in the queues, after dropping queued payloads of
        a lower severity if need be (only when that is enough to make it fit)."""
        wire = payload.wire
        # Room left in the topic's queue (bytes, messages) and in the total one.
        topic_free = max(state.queue_limit, 2 * wire) - state.queued_bytes - wire
        total_free = max(self._total_queue_limit, 2 * wire) - self._total_queued - wire
        messages_free = (
            self._queue_messages(state) - len(state.ready) - 1
            if state.messages_cap is not None
            else math.inf
        )
        topic_full = topic_free < 0 or messages_free < 0
        if not topic_full and total_free >= 0:
            return True
        severity = payload.severity
        # Candidates, lowest severity first and the newest first within one.
        owners = [state] if total_free >= 0 else list(self._active.values())
        if state not in owners:
            owners.append(state)
        candidates = sorted(
            (
                (queued.severity, -position, owner, queued)
                for owner in owners
                for position, queued in enumerate(owner.ready)
                if queued.severity < severity and not queued.accounting
            ),
            key=lambda item: (item[0], item[1]),
        )
        chosen: list[tuple[_Topic, _Payload]] = []
        for _, _, owner, queued in candidates:
            if topic_free >= 0 and total_free >= 0 and messages_free >= 0:
                break
            if owner is state:
                topic_free += queued.wire
                messages_free += 1
            elif total_free >= 0:
                continue  # another topic's payload frees room in the total queue only
            total_free += queued.wire
            chosen.append((owner, queued))
        if topic_free < 0 or total_free < 0 or messages_free < 0:
            return False
        for owner, queued in chosen:
            ready = owner.ready
            del ready[next(i for i, item in enumerate(ready) if item is queued)]
            owner.queued_bytes -= queued.wire
            self._total_queued -= queued.wire
            self._drop_payload(owner, queued, "rate_limited")
        return True

    def _queue_messages(self, state: _Topic) -> float:
        limits = self._limits
        cap = state.messages_cap or 0.0
        return max(1.0, cap * limits.queue_secs) if limits is not None else math.inf

    def _drop_payload(self, state: _Topic, payload: _Payload, reason: DropReason) -> None:
        if payload.events:
            self.metrics.drop(payload.events, reason)
        if reason == "rate_limited" and payload.by_level is not None:
            rate_limited = state.rate_limited
            for index, events in enumerate(payload.by_level):
                rate_limited[index] += events

    def _pop(self, state: _Topic) -> _Payload:
        payload = state.ready.popleft()
        state.queued_bytes -= payload.wire
        self._total_queued -= payload.wire
        return payload

    def _pump(self, state: _Topic) -> None:
        """Publish from the topic's ready queue while connected, allowed and not full."""
        ready = state.ready
        limiter = state.limiter
        state.wake_at = None
        while ready:
            payload = ready[0]
            if self._client is None or not self._connected:
                while ready:
                    self._drop_payload(state, self._pop(state), "not_connected")
                break
            charge = False
            if limiter:
                wait = limiter.wait_secs(payload.wire)
                if wait == math.inf:  # bigger than a bucket: it can never go ...
                    if not payload.accounting:
                        self._drop_payload(state, self._pop(state), "rate_limited")
                        continue
                    # ... except a record, which goes once the buckets are full, into debt.
                    wait, charge = limiter.wait_full_secs(), True
                if wait > 0:
                    state.wake_at = self._clock.monotonic() + wait
                    self._schedule(state.wake_at)
                    break
            if self._outstanding_full(len(payload.data)):
                if self._wait_for_room:
                    self._blocked = True
                    break
                self._drop_payload(state, self._pop(state), "broker_backpressure")
                continue
            if charge:
                limiter.charge(payload.wire)
            elif limiter:
                limiter.allow(payload.wire)
            self._publish(state.name, self._pop(state))
        if not ready and not state.lines:
            self._active.pop(state.name, None)

    def _publish(self, topic: str, payload: _Payload) -> None:
        client = self._client
        if client is None:  # pragma: no cover - _pump checked
            return
        size = len(payload.data)
        if self._broker_max_packet is not None and payload.wire > self._broker_max_packet:
            self.metrics.drop(payload.events, "rejected")
            self._warn_once(
                "max_packet",
                "sink %s: a message of %d bytes is over the broker's maximum packet size %d; "
                "lower max_payload_bytes",
                self.name,
                payload.wire,
                self._broker_max_packet,
            )
            return
        qos = self.config.qos
        try:
            info = client.publish(
                topic, payload.data, qos, self.config.retain, properties=payload.properties
            )
        except ValueError as error:  # a topic over 65535 bytes, a payload over 256 MB
            self.metrics.drop(payload.events, "rejected")
            self._warn_once("publish", "sink %s: message rejected: %s", self.name, error)
            return
        rc = info.rc
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            # [2] paho lost the connection after the last _drain: not queued.
            self.metrics.drop(payload.events, "not_connected")
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # MQTT_ERR_QUEUE_SIZE; a QoS 1 message with NO_CONN is kept by
            # paho and sent after reconnecting, so it is pending like any other.
            self.metrics.drop(payload.events, "broker_backpressure")
            return
        self._pending[info.mid] = (payload.events, size)
        self._pending_bytes += size
        self._idle.clear()

    def _schedule(self, at: float) -> None:
        """Make the timer task wake by ``at``."""
        if at < self._next_wake:
            self._next_wake = at
            self._wake.set()

    # ------------------------------------------------------------------ the timer task

    async def _run_timer(self) -> None:
        """Seal payloads whose delay passed, pump queues when tokens come, run the
        samplers' control windows and the accounting. Started in ``start``,
        cancelled in ``close``."""
        clock = self._clock
        while not self._timer_stopping:
            try:
                next_at = self._service(clock.monotonic())
            except Exception:  # a bug here must not end the sink's timer for good
                log.exception("sink %s: timer task failed; going on", self.name)
                self.metrics.errors += 1
                next_at = clock.monotonic() + _SWEEP_SECS
            self._next_wake = next_at
            self._wake.clear()
            delay = next_at - clock.monotonic()
            if delay > 0:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                # cancellation that comes as the wait ends ([3] _stop_timer).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)

    def _service(self, now: float) -> float:
        """One round of the timer task; returns when the next one is due."""
        if now >= self._window_end:
            self._control(now)
        if now >= self._next_sweep:
            self._sweep(now)
        next_at = min(self._next_sweep, self._window_end)
        active = list(self._active.values())
        if self._limits is not None:
            # Higher severities take the tokens first (stable: round robin among equals).
            active.sort(key=_head_severity, reverse=True)
        for state in active:
            if state.deadline is not None and now >= state.deadline:
                self._seal(state)
            if state.ready:
                before = len(state.ready)
                self._pump(state)
                if len(state.ready) < before and state.name in self._active:
                    # Round robin: a topic that just sent goes behind the others
                    # (they share the total bucket).
                    del self._active[state.name]
                    self._active[state.name] = state
            if state.deadline is not None:
                next_at = min(next_at, state.deadline)
            if state.ready and state.wake_at is not None:
                next_at = min(next_at, state.wake_at)
        return next_at

    def _control(self, now: float) -> None:
        """Close a sampling window: new keep ratios per topic and severity."""
        limits = self._limits
        if limits is None:  # pragma: no cover - no window without limits
            self._window_end = math.inf
            return
        window_start = self._window_start
        elapsed = now - window_start
        self._window_start = now
        self._window_end = now + limits.window_secs
        total = self._total_controller
        total_offered = [0.0] * LEVELS
        for state in self._topics.values():
            controller = state.controller
            if controller is not None:
                controller.offered[:] = state.offered
                budget = self._budget(state.bytes_cap, state.messages_cap, state.message_wire)
                controller.bytes_per_sec = budget or controller.bytes_per_sec
                # A topic that came during the window offered over less than all of it.
                own_elapsed = max(now - max(window_start, state.created), 0.25 * elapsed)
                state.topic_ratios = list(controller.update(own_elapsed, state.queued_bytes))
            ratios = state.topic_ratios
            for index, offered in enumerate(state.offered):
                total_offered[index] += offered * (ratios[index] if ratios else 1.0)
            state.offered = [0] * LEVELS
        total_ratios = None
        if total is not None:
            total.offered[:] = total_offered
            budget = self._budget(
                limits.total_bytes_per_sec, limits.total_messages_per_sec, self._total_message_wire
            )
            total.bytes_per_sec = budget or total.bytes_per_sec
            total_ratios = total.update(elapsed, self._total_queued)
        for state in self._topics.values():
            topic_ratios = state.topic_ratios
            if topic_ratios is None and total_ratios is None:
                continue
            self._set_ratios(
                state,
                [
                    (topic_ratios[i] if topic_ratios else 1.0)
                    * (total_ratios[i] if total_ratios else 1.0)
                    for i in range(LEVELS)
                ],
            )

    @staticmethod
    def _set_ratios(state: _Topic, ratios: list[float]) -> None:
        state.ratios = ratios
        for index, ratio in enumerate(ratios):
            if 0.0 < ratio < 1.0:
                state.factors[index] = 1.0 / ratio
                state.rates[index] = rate_json(1.0 / ratio)
            else:
                state.factors[index] = 1.0
                state.rates[index] = None

    def _sweep(self, now: float) -> None:
        """Accounting records that are due; forget topics idle for a while."""
        self._next_sweep = now + _SWEEP_SECS
        limits = self._limits
        interval = limits.accounting_interval_secs if limits is not None else 0.0
        wall = self._clock.time()
        for name, state in list(self._topics.items()):
            if interval and now - state.interval_start >= interval:
                self._account(state, now, wall)
            if (
                not state.ready
                and not state.lines
                and now - state.last_used > _TOPIC_IDLE_SECS
                and not any(state.sampled)
                and not any(state.rate_limited)
            ):
                del self._topics[name]
                self._active.pop(name, None)

    @property
    def _accounting(self) -> bool:
        """Whether the sink publishes accounting records."""
        return self._limits is not None and bool(self._limits.accounting_interval_secs)

    def _account(self, state: _Topic, now: float, wall: float, *, pump: bool = True) -> None:
        """Queue the topic's accounting record (when it lost events), publish it unless
        ``pump`` is False, and start a new interval."""
        sampled, rate_limited = state.sampled, state.rate_limited
        if any(sampled) or any(rate_limited):
            record = accounting_record(
                unit=self.name,
                start_wall=state.interval_start_wall,
                end_wall=wall,
                suppressed={"sampled": sampled, "rate_limited": rate_limited},
                kept=[max(0, p - r) for p, r in zip(state.passed, rate_limited, strict=True)],
                sample_rates={
                    LEVEL_NAMES[i]: state.factors[i]
                    for i in range(LEVELS)
                    if state.rates[i] is not None
                },
                topic=state.name,
            )
            line = dumps_event(record)
            if line is not None:
                data = self._framer.frame(join_lines([line]) if self._batched else line)
                self._enqueue(state, self._payload(state, data, 1, None, accounting=True))
                if pump:
                    self._pump(state)
        state.sampled, state.rate_limited, state.passed = [0] * LEVELS, [0] * LEVELS, [0] * LEVELS
        state.interval_start, state.interval_start_wall = now, wall

    async def close(self) -> None:
        """Send what is batched and queued, then wait for outstanding messages, then
        disconnect; all within ``close_timeout_secs``.

        Partial payloads are sealed and every topic that lost events gets its
        accounting record; queued payloads still go only as fast as the caps
        allow. At the deadline a topic that lost more events since then gets
        one more record, the queued records are published whatever the caps,
        and what is left is counted as dropped (``shutdown``) and logged.
        Returns within ``close_timeout_secs`` + 6 s at most, also when the
        broker has stopped reading.
        """
        client = self._client
        if client is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.close_timeout_secs
        try:
            self._flush_all()
            while self._active and self._connected and loop.time() < deadline:
                self._wake.set()  # the timer task pumps as tokens and room come
                await asyncio.sleep(0.01)
        finally:  # also when cancelled: the timer task must not outlive the sink
            await self._stop_timer()
            self._last_records()
            self._send_records()
            self._client = None
            self._drop_queued("shutdown")
        try:
            if self._pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
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

    def _flush_all(self) -> None:
        """Seal every partial payload, emit due accounting records, pump every queue.

        Every topic is sealed before any record is made: sealing one topic can
        push another topic's queued payloads out (``_make_room``), and those
        drops belong in that topic's record."""
        now, wall = self._clock.monotonic(), self._clock.time()
        states = list(self._topics.values())
        for state in states:
            self._seal(state)
        for state in states:
            if self._accounting:
                self._account(state, now, wall, pump=False)
            self._pump(state)

    def _last_records(self) -> None:
        """At the close deadline, before ``_send_records``: a record for each topic that
        lost events after its record from ``_flush_all`` (a payload pushed out of a
        full queue or over a bucket while closing), so the records add up to the
        metrics. Queues are not pumped: nothing may be counted after this."""
        if not self._accounting:
            return
        now, wall = self._clock.monotonic(), self._clock.time()
        for state in list(self._topics.values()):
            self._account(state, now, wall, pump=False)

    def _send_records(self) -> None:
        """At the close deadline: publish the accounting records still queued, whatever
        the caps (charged to the buckets), so subscribers learn what they lost."""
        if self._client is None or not self._connected:
            return
        for state in list(self._active.values()):
            records = [payload for payload in state.ready if payload.accounting]
            if not records:
                continue
            state.ready = deque(payload for payload in state.ready if not payload.accounting)
            for record in records:
                state.queued_bytes -= record.wire
                self._total_queued -= record.wire
                if state.limiter:
                    state.limiter.charge(record.wire)
                self._publish(state.name, record)

    def _drop_queued(self, reason: DropReason) -> None:
        for state in list(self._active.values()):
            state.lines, state.levels, state.raw, state.deadline = [], [], 0, None
            while state.ready:
                self._drop_payload(state, self._pop(state), reason)
        self._active.clear()

    async def _stop_timer(self) -> None:
        # [3] The flag ends the loop even if a cancellation were lost.
        self._timer_stopping = True
        self._wake.set()
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

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
        maximum = getattr(properties, "MaximumPacketSize", None) if properties else None
        self._post((_CONNECTED, reason_code.is_failure, str(reason_code), maximum))

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
                if self._blocked:
                    self._wake.set()  # the timer task pumps what waits for room
            elif kind == _CONNECTED:
                self._connection_result(failed=item[1], reason=item[2], max_packet=item[3])
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

    def _connection_result(self, *, failed: bool, reason: str, max_packet: int | None) -> None:
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
        self._broker_max_packet = max_packet if isinstance(max_packet, int) else None
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


def _head_severity(state: _Topic) -> int:
    return state.ready[0].severity if state.ready else -1


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
