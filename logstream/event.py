"""The Logstash event and the decoding of JSON lines into events.

An event is a plain ``dict`` shaped like a Logstash event::

    {"@timestamp": "2026-11-24T10:00:00.000Z", "@version": "1",
     "message": "...", "host": "web-1", "type": "...", "tags": [...],
     "level": "INFO", ...other fields}

Plain dicts keep the hot path cheap: orjson builds them and serialises them
without any conversion. A *batch* is a ``list`` of events; batches, never
single events, cross stage boundaries.

Ownership: filters run before fan-out and may change events in place; sinks
receive the same dict objects as every other sink and must treat them as
read-only.

python-logstash speaks two schemas. Version 1 is the flat form above.
Version 0 nests and prefixes::

    {"@message": ..., "@source_host": ..., "@source_path": ..., "@tags": [...],
     "@type": ..., "@timestamp": ..., "@fields": {"levelname": "INFO", ...}}

:func:`normalise` turns version 0 into the flat form, so nothing downstream
needs to know which one a client spoke.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import orjson

Event = dict[str, Any]
Batch = list[Event]

# Tags added to events that could not be taken as they came (Logstash names).
TAG_JSON_FAILURE: Final = "_jsonparsefailure"
TAG_LINE_TOO_LONG: Final = "_linetoolong"
TAG_UTF8_ERROR: Final = "_utf8error"

# Version 0 keys and the flat keys they become.
_V0_RENAMES: Final = {
    "@message": "message",
    "@source_host": "host",
    "@source_path": "path",
    "@source": "source",
    "@tags": "tags",
    "@type": "type",
}


def now_timestamp() -> str:
    """The current time as Logstash writes ``@timestamp``: UTC, milliseconds, ``Z``."""
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def normalise(event: Event) -> Event:
    """Bring a decoded JSON object to the flat Logstash form, in place.

    Cheap for version 1 events (two dict look-ups); version 0 events are
    rewritten: prefixed keys renamed, ``@fields`` flattened into the event
    (``levelname`` becomes ``level``, ``logger`` becomes ``logger_name``),
    without overwriting keys the event already has.
    """
    if "@message" in event or "@fields" in event:
        _flatten_v0(event)
    if "@timestamp" not in event:
        event["@timestamp"] = now_timestamp()
    if "@version" not in event:
        event["@version"] = "1"
    return event


def _flatten_v0(event: Event) -> None:
    for old, new in _V0_RENAMES.items():
        if old in event:
            value = event.pop(old)
            event.setdefault(new, value)
    fields = event.pop("@fields", None)
    if isinstance(fields, dict):
        level = fields.pop("levelname", None)
        if level is not None:
            event.setdefault("level", level)
        logger = fields.pop("logger", None)
        if logger is not None:
            event.setdefault("logger_name", logger)
        for key, value in fields.items():
            event.setdefault(key, value)
    elif fields is not None:
        event.setdefault("fields", fields)


def failed_event(text: str, *tags: str) -> Event:
    """An event for input that could not be decoded: the raw text and tags."""
    return {
        "@timestamp": now_timestamp(),
        "@version": "1",
        "message": text,
        "tags": list(tags),
    }


def decode_json(line: bytes) -> tuple[Event, str | None]:
    """Decode one JSON line (no newline) into an event.

    Returns the event and, when the line could not be taken as it came, the
    reason (``"json_parse_failure"`` or ``"invalid_utf8"``) for the caller to
    count. Never raises: a line that is not a JSON object becomes an event
    whose ``message`` is the raw text, tagged ``_jsonparsefailure``; invalid
    UTF-8 is replaced (U+FFFD) and the event tagged ``_utf8error``.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _decode_slow(line)
    if type(value) is dict:
        return normalise(value), None
    return failed_event(line.decode("utf-8", "replace").rstrip("\r"), TAG_JSON_FAILURE), (
        "json_parse_failure"
    )


def _decode_slow(line: bytes) -> tuple[Event, str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return failed_event(text.rstrip("\r"), TAG_UTF8_ERROR, TAG_JSON_FAILURE), "invalid_utf8"
        if type(value) is not dict:
            return failed_event(text.rstrip("\r"), TAG_UTF8_ERROR, TAG_JSON_FAILURE), "invalid_utf8"
        event = normalise(value)
        add_tag(event, TAG_UTF8_ERROR)
        return event, "invalid_utf8"
    return failed_event(text.rstrip("\r"), TAG_JSON_FAILURE), "json_parse_failure"


def add_tag(event: Event, tag: str) -> None:
    """Append ``tag`` to the event's ``tags`` (created, or fixed when not a list)."""
    tags = event.get("tags")
    if type(tags) is list:
        if tag not in tags:
            tags.append(tag)
    elif tags is None:
        event["tags"] = [tag]
    else:
        event["tags"] = [str(tags), tag]


def event_time(event: Event) -> dt.datetime:
    """The event's ``@timestamp`` as an aware UTC datetime (now, when missing or bad)."""
    raw = event.get("@timestamp")
    if isinstance(raw, str):
        try:
            parsed = dt.datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        return dt.datetime.fromtimestamp(raw, dt.UTC)
    return dt.datetime.now(dt.UTC)
