"""MQTT payloads, format version 1: encoders for the sink, one decoder for every subscriber.

The format is specified in ``docs/mqtt-payload.md``; this module is its
reference implementation. In short, a payload is one of:

============  ==========================================  ===========================
encoding      payload                                     first bytes
============  ==========================================  ===========================
``json``      one event, a JSON object                    ``{``
``ndjson``    events, one JSON object per line (``\\n``)  ``{``
``lz4``       NDJSON in one standard LZ4 frame            ``04 22 4d 18``
``zstd``      NDJSON in one standard Zstandard frame      ``28 b5 2f fd``
============  ==========================================  ===========================

MQTT 5 messages also carry a content type and user properties (format
version, encoding, event count, sample rates, record kind); MQTT 3.1.1
subscribers tell the encodings apart by the first bytes alone.

A kept event that stands for others (it was sampled) has a ``sample_rate``
field: the number of events it stands for. Accounting records (``type:
logstream.accounting``) say how many events were suppressed.

Encoders are chosen once per sink (:data:`ENCODERS`); they never raise for
bad events: an event that is not serialisable is left out and counted
(``encode_error``). :func:`decode` raises :class:`PayloadError` with a
message saying what is wrong, never anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import lz4.frame
import orjson

from logstream.event import Event
from logstream.metrics import UnitMetrics

FORMAT_VERSION: Final = 1
# Version 2 = version 1 plus the envelope line (``type: logstream.envelope``) that opens a
# batched payload of a publisher that numbers its messages (several brokers).
ENVELOPE_VERSION: Final = 2
SUPPORTED_VERSIONS: Final = (FORMAT_VERSION, ENVELOPE_VERSION)

Encoding = Literal["json", "ndjson", "lz4", "zstd"]
ENCODING_NAMES: Final[tuple[Encoding, ...]] = ("json", "ndjson", "lz4", "zstd")

LZ4_MAGIC: Final = b"\x04\x22\x4d\x18"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"

CONTENT_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "lz4": "application/x-ndjson+lz4",
    "zstd": "application/x-ndjson+zstd",
}
_ENCODING_OF_CONTENT_TYPE: Final = {value: key for key, value in CONTENT_TYPES.items()}

# MQTT 5 user property names (see docs/mqtt-payload.md).
PROP_VERSION: Final = "logstream"
PROP_ENCODING: Final = "encoding"
PROP_EVENTS: Final = "events"
PROP_SAMPLE_RATES: Final = "sample_rates"
PROP_RECORD: Final = "record"
PROP_PRODUCER: Final = "producer"
PROP_SEQ: Final = "seq"

# The field of a kept event that says how many events it stands for.
SAMPLE_RATE_FIELD: Final = "sample_rate"
# The ``type`` of an accounting record.
ACCOUNTING_TYPE: Final = "logstream.accounting"
# The ``type`` of the envelope line: who published the payload and its number on the topic.
ENVELOPE_TYPE: Final = "logstream.envelope"

# Decoded size above which a payload is refused (a decompression bomb guard).
DEFAULT_MAX_DECODED_BYTES: Final = 64 * 1024 * 1024

Record = Literal["events", "accounting"]


class PayloadError(ValueError):
    """A payload that is not valid format-version-1 data; the message says why."""


# --------------------------------------------------------------------------- lines


def serialise(events: list[Event], metrics: UnitMetrics) -> list[bytes]:
    """Each event as one JSON line (no newline). Unserialisable events are left
    out and counted as ``encode_error``."""
    dumps = orjson.dumps
    try:
        return [dumps(event) for event in events]
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        pass
    lines = []
    for event in events:
        line = dumps_event(event)
        if line is None:
            metrics.drop(1, "encode_error")
        else:
            lines.append(line)
    return lines


def dumps_event(event: Event) -> bytes | None:
    """One event as a JSON line, or None when it cannot be serialised."""
    try:
        return orjson.dumps(event)
    except TypeError:
        pass
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return None


def rate_json(sample_rate: float) -> bytes:
    """A sample rate as a JSON number: an integer when whole, else 4 significant digits."""
    rounded = round(sample_rate)
    if abs(sample_rate - rounded) < 1e-9 * max(1.0, sample_rate):
        return str(rounded).encode()
    return orjson.dumps(float(f"{sample_rate:.4g}"))


def with_sample_rate(line: bytes, event: Event, rate: bytes, factor: float) -> bytes | None:
    """``line`` (the JSON of ``event``) with ``"sample_rate": rate`` added.

    Cheap when the event has no ``sample_rate`` yet (the bytes are spliced);
    an existing rate (set by a ``sample`` filter) is multiplied by ``factor``.
    """
    previous = event.get(SAMPLE_RATE_FIELD)
    if previous is None:
        if line == b"{}":
            return b'{"' + SAMPLE_RATE_FIELD.encode() + b'":' + rate + b"}"
        return line[:-1] + b',"' + SAMPLE_RATE_FIELD.encode() + b'":' + rate + b"}"
    if isinstance(previous, int | float) and not isinstance(previous, bool) and previous > 0:
        combined = orjson.loads(rate_json(previous * factor))
    else:
        combined = orjson.loads(rate)
    return dumps_event({**event, SAMPLE_RATE_FIELD: combined})


# --------------------------------------------------------------------------- framing


class Framer(Protocol):
    """Turns NDJSON bytes (or one JSON object, for ``json``) into one payload."""

    encoding: Encoding
    batched: bool

    def frame(self, data: bytes) -> bytes: ...


class JsonFramer:
    encoding: Encoding = "json"
    batched = False

    def frame(self, data: bytes) -> bytes:
        return data


class NdjsonFramer:
    encoding: Encoding = "ndjson"
    batched = True

    def frame(self, data: bytes) -> bytes:
        return data


class Lz4Framer:
    """A standard LZ4 frame with a content checksum (``lz4 -dc`` reads it)."""

    encoding: Encoding = "lz4"
    batched = True

    def __init__(self, level: int = 0) -> None:
        if not 0 <= level <= 16:
            raise ValueError(f"lz4 compression_level must be 0 to 16, value: {level}")
        self.level = level
        self._compress = lz4.frame.compress

    def frame(self, data: bytes) -> bytes:
        framed: bytes = self._compress(data, compression_level=self.level, content_checksum=True)
        return framed


class ZstdFramer:
    """A standard Zstandard frame with the content size (``zstd -dc`` reads it)."""

    encoding: Encoding = "zstd"
    batched = True

    def __init__(self, level: int = 3) -> None:
        import zstandard

        if not 1 <= level <= 19:
            raise ValueError(f"zstd compression_level must be 1 to 19, value: {level}")
        self.level = level
        self._compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)

    def frame(self, data: bytes) -> bytes:
        return self._compressor.compress(data)


def framer(encoding: str, level: int | None = None) -> Framer:
    """The framer of ``encoding`` (``level``: compression level, default per encoding)."""
    if encoding == "json":
        return JsonFramer()
    if encoding == "ndjson":
        return NdjsonFramer()
    if encoding == "lz4":
        return Lz4Framer(0 if level is None else level)
    if encoding == "zstd":
        return ZstdFramer(3 if level is None else level)
    raise ValueError(f"encoding must be one of {', '.join(ENCODING_NAMES)}, value: {encoding!r}")


def join_lines(lines: list[bytes]) -> bytes:
    """NDJSON: every line ends with a newline."""
    return b"\n".join(lines) + b"\n"


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

    def __init__(self, metrics: UnitMetrics, **_settings: Any) -> None:
        self.metrics = metrics

    def encode(self, events: list[Event]) -> list[Message]:
        return [(line, 1) for line in serialise(events, self.metrics)]


class BatchEncoder:
    """Events packed into NDJSON payloads, framed (``ndjson``, ``lz4``, ``zstd``).

    A payload holds at most ``max_events`` events and, once framed, at most
    ``max_payload_bytes`` bytes (unless one event alone is bigger). Stateless:
    the sink's time-based batching across writes is :class:`PayloadBatcher`.
    """

    def __init__(
        self,
        metrics: UnitMetrics,
        encoding: str = "lz4",
        *,
        max_payload_bytes: int = 64 * 1024,
        max_events: int = 1000,
        level: int | None = None,
    ) -> None:
        self.metrics = metrics
        self.framer = framer(encoding, level)
        self.max_payload_bytes = max_payload_bytes
        self.max_events = max_events
        self.ratio = CompressionEstimate()

    def encode(self, events: list[Event]) -> list[Message]:
        lines = serialise(events, self.metrics)
        messages: list[Message] = []
        start, raw = 0, 0
        limit = self.ratio.raw_limit(self.max_payload_bytes)
        for index, line in enumerate(lines):
            raw += len(line) + 1
            if index + 1 - start >= self.max_events or raw >= limit:
                messages.extend(self.frame(lines[start : index + 1]))
                start, raw = index + 1, 0
                limit = self.ratio.raw_limit(self.max_payload_bytes)
        if start < len(lines):
            messages.extend(self.frame(lines[start:]))
        return messages

    def frame(self, lines: list[bytes]) -> list[Message]:
        """``lines`` as one payload, or several when the framed size is over the cap."""
        return frame_within(self.framer, lines, self.max_payload_bytes, self.ratio)


class CompressionEstimate:
    """Framed bytes per NDJSON byte, learned from payloads framed so far.

    Lets a batcher close a payload when its *framed* size reaches a cap without
    compressing after every event. Starts at 1.0 (no compression assumed).
    """

    def __init__(self) -> None:
        self.value = 1.0

    def learn(self, raw_bytes: int, framed_bytes: int) -> None:
        if raw_bytes > 0:
            self.value += 0.3 * (framed_bytes / raw_bytes - self.value)

    def raw_limit(self, max_framed_bytes: int) -> int:
        """NDJSON bytes expected to frame into ``max_framed_bytes`` (a little under)."""
        return max(1, int(max_framed_bytes * 0.9 / max(self.value, 0.01)))


class Numbering(Protocol):
    """Numbers a topic's messages as they are framed (``frame_within``'s ``numbering``)."""

    def envelope_line(self) -> bytes:
        """The envelope line of the next message (the same until :meth:`advance`)."""
        ...

    def advance(self) -> None:
        """The message framed with the last envelope line was kept: move to the next."""
        ...


def envelope_line(producer: str, seq: int) -> bytes:
    """The first line of a version 2 batched payload (docs/mqtt-payload.md, section 7)."""
    return orjson.dumps({"type": ENVELOPE_TYPE, PROP_PRODUCER: producer, PROP_SEQ: seq})


def frame_within(
    framer_: Framer,
    lines: list[bytes],
    max_bytes: int,
    estimate: CompressionEstimate,
    numbering: Numbering | None = None,
) -> list[Message]:
    """Frame ``lines`` into payloads of at most ``max_bytes`` each (halving as needed).

    With ``numbering``, each payload opens with its envelope line; the payloads come
    out numbered in order, with no number skipped (a trial that was too big is
    framed again under the same number)."""
    if not lines:
        return []
    if not framer_.batched:
        return [(line, 1) for line in lines]
    raw = join_lines(lines if numbering is None else [numbering.envelope_line(), *lines])
    payload = framer_.frame(raw)
    estimate.learn(len(raw), len(payload))
    if len(payload) <= max_bytes or len(lines) == 1:
        if numbering is not None:
            numbering.advance()
        return [(payload, len(lines))]
    half = len(lines) // 2
    first = frame_within(framer_, lines[:half], max_bytes, estimate, numbering)
    return first + frame_within(framer_, lines[half:], max_bytes, estimate, numbering)


def _encoder_factory(encoding: str) -> Callable[..., Encoder]:
    def build(metrics: UnitMetrics, **settings: Any) -> Encoder:
        return BatchEncoder(metrics, encoding, **settings)

    return build


ENCODERS: dict[str, Callable[..., Encoder]] = {
    "json": JsonEncoder,
    "ndjson": _encoder_factory("ndjson"),
    "lz4": _encoder_factory("lz4"),
    "zstd": _encoder_factory("zstd"),
}


# --------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """What one payload held."""

    encoding: Encoding
    events: list[Event]
    # From MQTT 5 properties; None when the message had none (MQTT 3.1.1).
    version: int | None = None
    record: Record = "events"
    # Severity name -> sample rate, from the ``sample_rates`` property.
    sample_rates: dict[str, float] = field(default_factory=dict)
    # Lines that were not JSON objects (the rest of the payload is kept).
    errors: list[str] = field(default_factory=list)
    # Who published it and its number on the topic (format version 2 envelope line, or
    # the MQTT 5 properties); None when the publisher does not number its messages.
    producer: str | None = None
    seq: int | None = None


def detect_encoding(payload: bytes) -> Encoding:
    """The encoding of a payload from its first bytes. Raises :class:`PayloadError`."""
    if payload.startswith(LZ4_MAGIC):
        return "lz4"
    if payload.startswith(ZSTD_MAGIC):
        return "zstd"
    stripped = payload.strip(b" \t\r\n")
    if stripped.startswith(b"{"):
        # Several lines, each an object, are ndjson; one object (even pretty-printed) json.
        return "ndjson" if b"}\n{" in stripped or b"}\r\n{" in stripped else "json"
    if not payload:
        raise PayloadError("empty payload")
    raise PayloadError(
        f"not a logstream payload: it starts with {payload[:8].hex(' ')}; expected the LZ4 "
        "frame magic 04 22 4d 18, the zstd magic 28 b5 2f fd or '{'"
    )


def decode(
    payload: bytes,
    *,
    content_type: str | None = None,
    properties: Mapping[str, str] | None = None,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Decoded:
    """Decode one MQTT payload (any encoding) into events.

    ``content_type`` and ``properties`` (user properties) come from MQTT 5
    messages; without them the encoding is told from the payload itself.
    Raises :class:`PayloadError` for an unsupported format version, a payload
    of no known encoding, a truncated or corrupt frame, or one that decodes
    to more than ``max_decoded_bytes``. Lines that are not JSON objects are
    reported in ``errors``; the other events are returned.
    """
    props = properties or {}
    version = _version(props.get(PROP_VERSION))
    detected = detect_encoding(payload)
    declared = _declared_encoding(content_type, props.get(PROP_ENCODING))
    if declared is not None and declared != detected and {declared, detected} != {"json", "ndjson"}:
        raise PayloadError(f"the message says encoding {declared!r} but the payload is {detected}")
    encoding = declared or detected
    if encoding == "lz4":
        text = _lz4_decompress(payload, max_decoded_bytes)
    elif encoding == "zstd":
        text = _zstd_decompress(payload, max_decoded_bytes)
    else:
        if len(payload) > max_decoded_bytes:
            raise PayloadError(f"payload of {len(payload)} bytes is over {max_decoded_bytes}")
        text = payload
    decoded = Decoded(encoding, [], version)
    if encoding in ("lz4", "zstd"):
        _decode_lines(text, decoded)
    elif not _decode_object(text, decoded):
        decoded.encoding = "ndjson"
        _decode_lines(text, decoded)
    _take_envelope(decoded, props)
    if not decoded.events and decoded.errors:
        raise PayloadError(
            f"no event in the {decoded.encoding} payload: " + "; ".join(decoded.errors[:3])
        )
    record = props.get(PROP_RECORD)
    if record == "accounting" or (
        record is None and decoded.events and all(is_accounting(e) for e in decoded.events)
    ):
        decoded.record = "accounting"
    decoded.sample_rates = _sample_rates(props.get(PROP_SAMPLE_RATES), decoded)
    count = props.get(PROP_EVENTS)
    if count is not None and count != str(len(decoded.events) + len(decoded.errors)):
        decoded.errors.append(
            f"the events property says {count} but the payload holds "
            f"{len(decoded.events) + len(decoded.errors)}"
        )
    return decoded


def is_accounting(event: Event) -> bool:
    """Whether ``event`` is an accounting record (how many events were suppressed)."""
    return event.get("type") == ACCOUNTING_TYPE


def _version(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        version = int(raw)
    except ValueError:
        raise PayloadError(f"format version {raw!r} is not a number") from None
    if version not in SUPPORTED_VERSIONS:
        raise PayloadError(
            f"format version {version} is not supported (this decoder reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade logstream"
        )
    return version


def _take_envelope(decoded: Decoded, props: Mapping[str, str]) -> None:
    """Take the envelope line (the first event, when it is one) out of the events and
    set ``producer`` and ``seq`` from it or from the MQTT 5 properties."""
    events = decoded.events
    line: Event | None = None
    if events and events[0].get("type") == ENVELOPE_TYPE:
        line = events.pop(0)
    producer: object = props.get(PROP_PRODUCER)
    seq: object = props.get(PROP_SEQ)
    if line is not None:
        producer = line.get(PROP_PRODUCER) if producer is None else producer
        seq = line.get(PROP_SEQ) if seq is None else seq
    if producer is None and seq is None:
        return
    try:
        number = int(seq) if isinstance(seq, int | str) and not isinstance(seq, bool) else None
    except ValueError:
        number = None
    if not isinstance(producer, str) or not producer or number is None or number < 1:
        decoded.errors.append(
            f"bad envelope: producer {producer!r}, seq {seq!r} (want a name and a number >= 1)"
        )
        return
    decoded.producer, decoded.seq = producer, number


def _declared_encoding(content_type: str | None, encoding: str | None) -> Encoding | None:
    if encoding is not None:
        if encoding not in ENCODING_NAMES:
            raise PayloadError(
                f"unknown encoding {encoding!r}; this decoder reads {', '.join(ENCODING_NAMES)}"
            )
        return encoding
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        return _ENCODING_OF_CONTENT_TYPE.get(base)  # type: ignore[return-value]
    return None


def _lz4_decompress(payload: bytes, limit: int) -> bytes:
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        data: bytes = decompressor.decompress(payload, max_length=limit + 1)
    except RuntimeError as error:
        raise PayloadError(f"corrupt LZ4 frame: {error}") from None
    if len(data) > limit:
        raise PayloadError(f"LZ4 frame decodes to more than {limit} bytes")
    if not decompressor.eof:
        raise PayloadError(
            f"truncated LZ4 frame: {len(payload)} bytes end before the frame's end mark"
        )
    if decompressor.unused_data:
        raise PayloadError(
            f"{len(decompressor.unused_data)} bytes after the LZ4 frame; one frame per payload"
        )
    return data


def _zstd_decompress(payload: bytes, limit: int) -> bytes:
    import zstandard

    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        data = decompressor.decompress(payload)
    except zstandard.ZstdError as error:
        raise PayloadError(f"corrupt zstd frame: {error}") from None
    if len(data) > limit:
        raise PayloadError(f"zstd frame decodes to more than {limit} bytes")
    if not decompressor.eof:
        raise PayloadError(f"truncated zstd frame: {len(payload)} bytes end before the frame ends")
    if decompressor.unused_data:
        raise PayloadError(
            f"{len(decompressor.unused_data)} bytes after the zstd frame; one frame per payload"
        )
    return data


def _decode_object(text: bytes, decoded: Decoded) -> bool:
    """True when ``text`` is one JSON object (added to the events); else the caller
    reads it line by line (NDJSON fails here at its second line, cheaply)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    if type(value) is not dict:
        raise PayloadError(f"the JSON payload is a {type(value).__name__}, not an object")
    decoded.events.append(value)
    return True


def _decode_lines(text: bytes, decoded: Decoded) -> None:
    loads = orjson.loads
    events = decoded.events
    for number, line in enumerate(text.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            value = loads(line)
        except orjson.JSONDecodeError as error:
            decoded.errors.append(f"line {number}: not valid JSON: {error}")
            continue
        if type(value) is dict:
            events.append(value)
        else:
            decoded.errors.append(f"line {number}: a {type(value).__name__}, not an object")


def _sample_rates(raw: str | None, decoded: Decoded) -> dict[str, float]:
    if not raw:
        return {}
    rates: dict[str, float] = {}
    for part in raw.split(","):
        name, _, value = part.partition("=")
        try:
            rates[name.strip()] = float(value)
        except ValueError:
            decoded.errors.append(f"sample_rates property: bad entry {part!r}")
    return rates


def format_sample_rates(rates: Mapping[str, float]) -> str:
    """``{"INFO": 10, "DEBUG": 100}`` -> ``"INFO=10,DEBUG=100"`` (the property's form)."""
    return ",".join(f"{name}={rate_json(rate).decode()}" for name, rate in rates.items())
