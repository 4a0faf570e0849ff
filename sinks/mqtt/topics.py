"""Topic templates (``logs/{host}/{level}`` compiled into a function of the event)
and MQTT topic filters (``rate_limit.topics``).

Literal parts are checked once, field values are sanitised on every event
(cached, since hosts and levels repeat) so event data can never produce a
wildcard, an extra level, a ``$`` topic or a character mosquitto rejects
(it disconnects a client that publishes a control character in a topic).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from logstream.event import Event

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
