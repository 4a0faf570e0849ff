"""Payload building: a topic's JSON lines batched and framed into messages, each with
its MQTT 5 properties and its size on the wire.

Pure and synchronous (no broker, no clock): :class:`PayloadBuilder` takes a
topic's lines, keeps a partial payload per topic (sealed when it reaches
``payload_max_events`` or the framed size cap, or when its delay passes) and
returns :class:`Payload` objects for the scheduler to queue. Formats follow
``docs/mqtt-payload.md`` (:mod:`logstream.payload`).
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from logstream.payload import (
    CONTENT_TYPES,
    ENVELOPE_VERSION,
    FORMAT_VERSION,
    PROP_ENCODING,
    PROP_EVENTS,
    PROP_PRODUCER,
    PROP_RECORD,
    PROP_SAMPLE_RATES,
    PROP_SEQ,
    PROP_VERSION,
    Framer,
    envelope_line,
    format_sample_rates,
    frame_within,
    join_lines,
)
from logstream.sampling import LEVEL_NAMES, LEVELS

from .config import MqttSinkConfig
from .state import TopicState

# Room kept for the packet header, topic and properties below an announced maximum packet size.
PACKET_MARGIN = 512
# Properties objects kept for reuse (most messages share them).
_PROPERTIES_CACHE_MAX = 512
# Topics whose message numbers are remembered; past this the numbering starts a new epoch.
_NUMBERED_TOPICS_MAX = 100_000


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
class Payload:
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
    seq: int = 0  # its number on the topic (0: the sink does not number messages)


# A payload and the NDJSON bytes of its events per severity (None: one event, or untracked).
Sealed = tuple[Payload, list[int] | None]

ONE_HOT: tuple[list[int], ...] = tuple(
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
    encoding: str,
    count: int,
    sample_rates: str = "",
    accounting: bool = False,
    *,
    producer: str | None = None,
    seq: int = 0,
) -> Properties:
    """The MQTT 5 PUBLISH properties of a payload (docs/mqtt-payload.md), packed once.

    With ``producer`` and ``seq`` (a numbering sink), batched payloads are format
    version 2 (they open with the envelope line)."""
    properties = _PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ContentType = CONTENT_TYPES[encoding]
    if encoding in ("json", "ndjson"):
        properties.PayloadFormatIndicator = 1  # UTF-8 text
    numbered = producer is not None and seq > 0
    version = ENVELOPE_VERSION if numbered and encoding != "json" else FORMAT_VERSION
    user = [
        (PROP_VERSION, str(version)),
        (PROP_ENCODING, encoding),
        (PROP_EVENTS, str(count)),
    ]
    if sample_rates:
        user.append((PROP_SAMPLE_RATES, sample_rates))
    if accounting:
        user.append((PROP_RECORD, "accounting"))
    if numbered:
        user += [(PROP_PRODUCER, str(producer)), (PROP_SEQ, str(seq))]
    properties.UserProperty = user
    properties.seal()
    return properties


def default_producer() -> str:
    """This process's producer id: the host name and a random part (a new one per start)."""
    host = socket.gethostname().split(".", 1)[0] or "host"
    return f"{host}-{secrets.token_hex(4)}"


class Numbering:
    """The producer id and every topic's last message number (``sequence``).

    Numbers start at 1 per topic and go up by one per message (accounting records
    included), whatever broker it goes to: every broker gets the same number for
    the same message, so a subscriber following several drops repeats. The
    numbers outlive a topic the sink forgets while idle; if more than
    ``_NUMBERED_TOPICS_MAX`` topics were numbered the counts start again under a
    new epoch, which is part of the producer id (subscribers see a new producer).
    """

    def __init__(self, producer: str) -> None:
        self.base = producer
        self.epoch = 0
        self.producer = producer
        self.last: dict[str, int] = {}
        self._topic = ""
        self._next = 1

    def begin(self, topic: str) -> int:
        """Number the next messages of ``topic``; return the number of the first."""
        if topic not in self.last and len(self.last) >= _NUMBERED_TOPICS_MAX:
            self.last.clear()
            self.epoch += 1
            self.producer = f"{self.base}.e{self.epoch}"
        self._topic = topic
        self._next = self.last.get(topic, 0) + 1
        return self._next

    def envelope_line(self) -> bytes:
        return envelope_line(self.producer, self._next)

    def advance(self) -> None:
        self.last[self._topic] = self._next
        self._next += 1

    def take(self, topic: str) -> int:
        """The number of one more message of ``topic``."""
        seq = self.begin(topic)
        self.advance()
        return seq


class PayloadBuilder:
    """Lines in, framed payloads out, per topic (see the module docstring)."""

    def __init__(
        self, config: MqttSinkConfig, framer: Framer, numbering: Numbering | None = None
    ) -> None:
        self.config = config
        self.framer = framer
        self.batched = framer.batched
        self.v5 = config.protocol == "5"
        # Set by the connection from an MQTT 5 CONNACK (None: not announced).
        self.broker_max_packet: int | None = None
        self._properties_cache: dict[tuple[int, str, bool], tuple[Properties, int]] = {}
        # Producer id and message numbers (``sequence``); None: messages are not numbered.
        self.numbering = numbering

    def max_payload(self, state: TopicState) -> int:
        """The framed payload size a topic's payloads are kept under."""
        limit = self.config.max_payload_bytes
        # Fixed header, topic, packet id and (MQTT 5) properties, roughly.
        overhead = 7 + state.topic_bytes + (120 if self.v5 else 0)
        if state.limiter:
            # Half a bucket, so a wake-up that comes a little late loses no tokens.
            limit = min(limit, int(state.limiter.max_message_bytes / 2) - overhead)
        if self.broker_max_packet is not None:
            limit = min(limit, self.broker_max_packet - PACKET_MARGIN - state.topic_bytes)
        return max(64, limit)

    def singles(
        self, state: TopicState, lines: list[bytes], levels: list[int] | None
    ) -> list[Sealed]:
        """One message per line (``encoding: json``)."""
        numbering = self.numbering
        if numbering is not None:  # the number goes in the MQTT 5 properties only
            hot = ONE_HOT
            return [
                (
                    self.payload(
                        state,
                        line,
                        1,
                        None if levels is None else hot[levels[i]],
                        seq=numbering.take(state.name),
                    ),
                    None,
                )
                for i, line in enumerate(lines)
            ]
        if levels is None:
            return [(self.payload(state, line, 1, None), None) for line in lines]
        return [
            (self.payload(state, line, 1, ONE_HOT[index]), None)
            for line, index in zip(lines, levels, strict=True)
        ]

    def collect(
        self, state: TopicState, lines: list[bytes], levels: list[int] | None, now: float
    ) -> list[Sealed]:
        """Add lines to the topic's partial payload; return the payloads sealed on the way.

        Sets ``state.deadline`` when a partial payload is left waiting for more."""
        max_events = self.config.payload_max_events
        pending = state.lines
        sealed: list[Sealed] = []
        for position, line in enumerate(lines):
            pending.append(line)
            if levels is not None:
                state.levels.append(levels[position])
            state.raw += len(line) + 1
            if len(pending) >= max_events or state.raw >= state.raw_limit:
                sealed.extend(self.seal(state))
                pending = state.lines
        if pending:
            delay = self.config.payload_max_delay_secs
            if not delay:
                sealed.extend(self.seal(state))
            elif state.deadline is None:
                state.deadline = now + delay
        return sealed

    def seal(self, state: TopicState) -> list[Sealed]:
        """Frame the partial payload (split when over the size cap)."""
        lines, levels = state.lines, state.levels
        state.deadline = None
        if not lines:
            return []
        state.lines, state.levels, state.raw = [], [], 0
        max_payload = self.max_payload(state)
        numbering = self.numbering
        seq = numbering.begin(state.name) if numbering is not None else 0
        messages = frame_within(self.framer, lines, max_payload, state.estimate, numbering)
        state.raw_limit = state.estimate.raw_limit(max_payload)
        sealed: list[Sealed] = []
        start = 0
        for number, (data, count) in enumerate(messages, seq):
            by_level: list[int] | None = None
            raw_by_level: list[int] | None = None
            if levels:
                by_level, raw_by_level = [0] * LEVELS, [0] * LEVELS
                for position in range(start, start + count):
                    index = levels[position]
                    by_level[index] += 1
                    raw_by_level[index] += len(lines[position]) + 1
            payload = self.payload(state, data, count, by_level, seq=number if seq else 0)
            sealed.append((payload, raw_by_level))
            start += count
        return sealed

    def record(self, state: TopicState, line: bytes) -> Payload:
        """An accounting record (one JSON line) framed as the sink's payloads are."""
        numbering = self.numbering
        seq = numbering.take(state.name) if numbering is not None else 0
        if not self.batched:
            data = self.framer.frame(line)
        elif numbering is not None:
            data = self.framer.frame(join_lines([envelope_line(numbering.producer, seq), line]))
        else:
            data = self.framer.frame(join_lines([line]))
        return self.payload(state, data, 1, None, accounting=True, seq=seq)

    def payload(
        self,
        state: TopicState,
        data: bytes,
        count: int,
        by_level: list[int] | None,
        *,
        accounting: bool = False,
        seq: int = 0,
    ) -> Payload:
        properties, properties_bytes = None, None
        if self.v5 and seq:
            properties, properties_bytes = self.numbered_properties(
                state, count, by_level, accounting, seq
            )
        elif self.v5:
            rates = ""
            if by_level is not None and any(state.rates):
                rates = format_sample_rates(
                    {
                        LEVEL_NAMES[i]: state.factors[i]
                        for i in range(LEVELS)
                        if state.rates[i] is not None and by_level[i]
                    }
                )
            properties, properties_bytes = self.properties(count, rates, accounting)
        wire = wire_size(state.topic_bytes, len(data), self.config.qos, properties_bytes)
        severity = LEVELS if accounting else LEVELS - 1
        if by_level is not None and not accounting:
            severity = max((i for i in range(LEVELS) if by_level[i]), default=0)
        return Payload(
            data, 0 if accounting else count, wire, properties, by_level, accounting, severity, seq
        )

    def numbered_properties(
        self,
        state: TopicState,
        count: int,
        by_level: list[int] | None,
        accounting: bool,
        seq: int,
    ) -> tuple[Properties, int]:
        """MQTT 5 properties with the producer and the message number (one per message)."""
        assert self.numbering is not None
        properties = payload_properties(
            self.config.encoding,
            count,
            self._rates(state, by_level),
            accounting,
            producer=self.numbering.producer,
            seq=seq,
        )
        return properties, len(properties.pack())  # type: ignore[no-untyped-call]

    @staticmethod
    def _rates(state: TopicState, by_level: list[int] | None) -> str:
        if by_level is None or not any(state.rates):
            return ""
        return format_sample_rates(
            {
                LEVEL_NAMES[i]: state.factors[i]
                for i in range(LEVELS)
                if state.rates[i] is not None and by_level[i]
            }
        )

    def properties(self, count: int, rates: str, accounting: bool) -> tuple[Properties, int]:
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
