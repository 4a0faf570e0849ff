"""Logstash-style ``sprintf`` templates: event fields and ``@timestamp`` dates in strings.

::

    logstash-%{+YYYY.MM.dd}          -> logstash-2026.11.24   (@timestamp, in UTC)
    logs-%{type}-%{+xxxx.ww}         -> logs-nginx-2026.48    (ISO week-year and week)
    %{[kubernetes][namespace]}-app   -> prod-app              (a nested field)

A template is compiled once (at build time) into a :class:`Template` whose
``render(event)`` is a closure chosen for the template's shape: a constant
template returns its text, a date-only one does one dict look-up per event.

Fields
    ``%{name}`` is the top-level field ``name`` (dots are part of the name, as
    in Logstash); ``%{[a][b]}`` is a nested field; a list element is
    ``%{[tags][0]}``. Strings are used as they are, ``true``/``false`` for
    booleans, JSON for objects, and list elements joined with ``,``.
    **A missing (or null) field leaves the reference as it was written**
    (``logs-%{host}`` stays ``logs-%{host}``): that is what Logstash does,
    and it makes a missing field visible in the index name instead of
    silently merging events into a wrong index.

Dates
    ``%{+FORMAT}`` formats the event's ``@timestamp`` in UTC with Joda tokens:
    ``YYYY``/``yyyy`` (year), ``YY``/``yy`` (two-digit year), ``MM``, ``dd``,
    ``HH``, ``mm``, ``ss``, ``xxxx`` (ISO week-year), ``ww`` (ISO week);
    other characters are copied, ``'text'`` is copied as is. Any other letter
    is an error when compiling. A missing or unparsable ``@timestamp`` means
    now. For a timestamp ending in ``Z`` (what Logstash and python-logstash
    write) only its leading part that the format needs is read, and the result
    is cached by that part; other offsets (``+02:00``) are parsed and converted
    to UTC for every event.

Index names
    :func:`sanitize_index_name` turns any rendered text into a name
    Elasticsearch accepts; :func:`compile_index_template` does both, cached.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from logstream.event import Event, event_time

Render = Callable[[Event], str]

_REFERENCE: Final = re.compile(r"%\{([^}]+)\}")
_NESTED: Final = re.compile(r"(?:\[[^\[\]]+\])+")
_CACHE_MAX: Final = 4096

# Joda token -> (how to format it from a UTC datetime, how much of an ISO
# timestamp ("2026-11-24T10:00:00") it depends on).
_DATE: Final = 10
_HOUR: Final = 13
_MINUTE: Final = 16
_SECOND: Final = 19
_TOKENS: Final[dict[str, tuple[Callable[[dt.datetime], str], int]]] = {
    "YYYY": (lambda t: f"{t.year:04d}", _DATE),
    "yyyy": (lambda t: f"{t.year:04d}", _DATE),
    "YY": (lambda t: f"{t.year % 100:02d}", _DATE),
    "yy": (lambda t: f"{t.year % 100:02d}", _DATE),
    "MM": (lambda t: f"{t.month:02d}", _DATE),
    "dd": (lambda t: f"{t.day:02d}", _DATE),
    "HH": (lambda t: f"{t.hour:02d}", _HOUR),
    "mm": (lambda t: f"{t.minute:02d}", _MINUTE),
    "ss": (lambda t: f"{t.second:02d}", _SECOND),
    "xxxx": (lambda t: f"{t.isocalendar()[0]:04d}", _DATE),
    "ww": (lambda t: f"{t.isocalendar()[1]:02d}", _DATE),
}
_DATE_PIECE: Final = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|[^A-Za-z']+")


class Template:
    """A compiled template. ``render(event)`` gives the text for one event."""

    __slots__ = ("constant", "fields", "render", "source")

    def __init__(self, source: str, render: Render, fields: tuple[str, ...], constant: bool):
        self.source = source
        self.render = render
        # The field references it reads, as written (``host``, ``[a][b]``).
        self.fields = fields
        # True when the output never depends on the event.
        self.constant = constant

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(source: str) -> Template:
    """Compile ``source`` once. Raises ``ValueError`` for a date format it cannot do."""
    parts: list[str | Render] = []
    fields: list[str] = []
    position = 0
    for match in _REFERENCE.finditer(source):
        if match.start() > position:
            parts.append(source[position : match.start()])
        inner = match.group(1)
        if inner.startswith("+"):
            parts.append(_date_part(inner[1:], source))
        else:
            parts.append(_field_part(inner.strip(), match.group(0)))
            fields.append(inner.strip())
        position = match.end()
    if position < len(source):
        parts.append(source[position:])
    return Template(source, _join(parts), tuple(fields), not any(callable(p) for p in parts))


def _join(parts: list[str | Render]) -> Render:
    """The fastest closure for the shape of ``parts``."""
    merged: list[str | Render] = []
    for part in parts:  # adjacent literals -> one literal
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + part
        else:
            merged.append(part)
    if not merged:
        return lambda event: ""
    if len(merged) == 1:
        only = merged[0]
        if isinstance(only, str):
            return lambda event: only
        return only
    renders = [p for p in merged if not isinstance(p, str)]
    if len(merged) <= 3 and len(renders) == 1:
        # prefix + part + suffix, the shape of "logstash-%{+YYYY.MM.dd}".
        middle = renders[0]
        index = merged.index(middle)
        prefix = "".join(p for p in merged[:index] if isinstance(p, str))
        suffix = "".join(p for p in merged[index + 1 :] if isinstance(p, str))
        return lambda event: prefix + middle(event) + suffix
    pieces = tuple(merged)

    def render(event: Event) -> str:
        return "".join([p if isinstance(p, str) else p(event) for p in pieces])

    return render


# --------------------------------------------------------------------------- fields


def _field_part(reference: str, literal: str) -> Render:
    if _NESTED.fullmatch(reference):
        path = tuple(_path_key(key) for key in reference[1:-1].split("]["))
    else:
        path = (reference,)
    name = path[0]
    if len(path) == 1 and isinstance(name, str):

        def top_level(event: Event) -> str:
            value = event.get(name)
            return literal if value is None else _text(value)

        return top_level

    def nested(event: Event) -> str:
        value: Any = event
        for key in path:
            if type(value) is dict:
                value = value.get(key) if isinstance(key, str) else None
            elif type(value) is list and isinstance(key, int) and -len(value) <= key < len(value):
                value = value[key]
            else:
                return literal
            if value is None:
                return literal
        return _text(value)

    return nested


def _path_key(key: str) -> str | int:
    """``[tags][0]``: a key that is an integer indexes a list (and is a string in a dict)."""
    return int(key) if key.lstrip("-").isdigit() else key


def _text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is list:
        return ",".join(_text(item) for item in value if item is not None)
    if kind is dict:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


# --------------------------------------------------------------------------- dates


def compile_date_format(pattern: str) -> tuple[Callable[[dt.datetime], str], int]:
    """A Joda-style ``pattern`` as a function of a UTC datetime, and how many leading
    characters of an ISO 8601 timestamp it depends on. Raises ``ValueError``."""
    pieces: list[str | Callable[[dt.datetime], str]] = []
    needs = _DATE
    for match in _DATE_PIECE.finditer(pattern):
        text = match.group(0)
        if match.group(1):  # a run of one letter
            token = _TOKENS.get(text)
            if token is None:
                known = ", ".join(_TOKENS)
                raise ValueError(
                    f"date format {pattern!r}: unsupported token {text!r} (supported: {known}; "
                    "quote literal letters as 'text')"
                )
            pieces.append(token[0])
            needs = max(needs, token[1])
        elif text.startswith("'"):
            pieces.append(text[1:-1].replace("''", "'") if text != "''" else "'")
        else:
            pieces.append(text)
    if "".join(match.group(0) for match in _DATE_PIECE.finditer(pattern)) != pattern:
        raise ValueError(f"date format {pattern!r}: unbalanced quote")
    frozen = tuple(pieces)

    def format_date(when: dt.datetime) -> str:
        return "".join([p if isinstance(p, str) else p(when) for p in frozen])

    return format_date, needs


def _date_part(pattern: str, source: str) -> Render:
    try:
        format_date, key_length = compile_date_format(pattern)
    except ValueError as error:
        raise ValueError(f"template {source!r}: {error}") from None
    cache: dict[str, str] = {}

    def from_timestamp(event: Event) -> str:
        raw = event.get("@timestamp")
        # The fast path: "...Z" is UTC, so the first key_length characters
        # decide the result; only a cache miss parses the timestamp.
        if type(raw) is str and raw[-1:] == "Z":
            key = raw[:key_length]
            text = cache.get(key)
            if text is not None:
                return text
            try:
                parsed = dt.datetime.fromisoformat(raw)
            except ValueError:
                return format_date(dt.datetime.now(dt.UTC))
            text = format_date(parsed.astimezone(dt.UTC))
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[key] = text
            return text
        return format_date(event_time(event))

    return from_timestamp


# --------------------------------------------------------------------------- index names

# Characters Elasticsearch refuses in an index name (":" since 7.0).
_INDEX_FORBIDDEN: Final = re.compile(r'[\\/*?"<>| ,#:]')
_INDEX_BAD_START: Final = "_-+"
INDEX_NAME_MAX_BYTES: Final = 255
# What a name that sanitises to nothing (or "." / "..") becomes.
INVALID_INDEX_NAME: Final = "logstream-invalid-index-name"


def sanitize_index_name(name: str) -> str:
    """``name`` made acceptable to Elasticsearch as an index name.

    Lowercased; ``\\ / * ? " < > | , # :`` and spaces become ``_``; leading
    ``_ - +`` are removed; cut to 255 UTF-8 bytes. A name left empty (or
    ``.``/``..``) becomes :data:`INVALID_INDEX_NAME`, so every document
    always has an index.
    """
    clean = _INDEX_FORBIDDEN.sub("_", name.lower()).lstrip(_INDEX_BAD_START)
    encoded = clean.encode("utf-8")
    if len(encoded) > INDEX_NAME_MAX_BYTES:
        clean = encoded[:INDEX_NAME_MAX_BYTES].decode("utf-8", "ignore")
    if clean in ("", ".", ".."):
        return INVALID_INDEX_NAME
    return clean


_UNCLOSED: Final = re.compile(r"%\{[^}]*$")
# A Joda date pattern written without %{+...}: "logs-YYYY.MM.dd".
_BARE_DATE: Final = re.compile(r"(?<![%{A-Za-z])((?:YYYY|yyyy|xxxx)(?:[.\-_/]?(?:MM|ww|dd|HH))+)")


def _clean(text: str) -> str:
    return _INDEX_FORBIDDEN.sub("_", text.lower())


def _index_hint(name: str) -> str:
    """What to suggest for a constant index name Elasticsearch would refuse.

    Lowercasing is right for plain text, wrong for a date pattern whose
    reference was mistyped (``logs-%{+YYYY.MM.dd`` must not become ``mm``,
    minutes): for those, suggest the reference closed or written out.
    """
    unclosed = _UNCLOSED.search(name)
    if unclosed is not None:
        fixed = _clean(name[: unclosed.start()]) + unclosed.group(0) + "}"
        try:
            compile_template(fixed)
        except ValueError:
            return f"the reference {unclosed.group(0)!r} is not closed with '}}'"
        return f"the reference {unclosed.group(0)!r} is not closed: did you mean {fixed!r}?"
    bare = _BARE_DATE.search(name)
    if bare is not None:
        date = "%{+" + bare.group(1) + "}"
        fixed = _clean(name[: bare.start()]) + date + _clean(name[bare.end() :])
        return f"a date is written %{{+FORMAT}}: did you mean {fixed!r}?"
    return f"did you mean {sanitize_index_name(name)!r}?"


def compile_index_template(source: str) -> Template:
    """Compile an index-name template whose output is always a valid index name.

    Raises ``ValueError`` for a bad date format, or for a constant template
    that is not a valid index name as written (a typo caught at build time).
    """
    template = compile_template(source)
    if template.constant:
        name = template.render({})
        if sanitize_index_name(name) != name:
            raise ValueError(
                f"index {source!r} is not a valid Elasticsearch index name (lowercase, no "
                f'\\ / * ? " < > | , # : or spaces, not starting with _ - +); '
                f"{_index_hint(name)}"
            )
        return template
    render = template.render
    names: dict[str, str] = {}

    def render_index(event: Event) -> str:
        raw = render(event)
        name = names.get(raw)
        if name is None:
            if len(names) >= _CACHE_MAX:
                names.clear()
            name = names[raw] = sanitize_index_name(raw)
        return name

    return Template(source, render_index, template.fields, False)
