"""The ``parse`` filter: log lines into structured events on one severity scale.

::

    - type: parse
      source: message                 # the field holding the line (default)
      format: auto                    # or one format: oslo, syslog, apache_access, ...
      formats: [oslo, console]        # auto-detection tries only these (default: all)
      fields: default                 # or ecs: log.level, host.name, process.pid, ...
      timezone: UTC                   # zone of timestamps that carry none (IANA name)
      default_level: INFO             # level of a stream's first lines that state none
      inherit_level: true             # false: lines that state no level get default_level
      stream_key: [host, path, type]  # fields whose values name a stream (one log file)
      max_streams: 10000              # streams remembered; least recently seen forgotten
      redetect_after_lines: 50        # unknown lines in a row before detecting again
      multiline: true                 # fold continuation lines into their record
      multiline_max_lines: 500
      multiline_max_bytes: 1048576
      multiline_timeout_secs: 1.0     # a record held this long without a new line is let go
      on_failure: _parsefailure       # tag of lines no parser knows (null: no tag)
      keep_original: false            # keep the raw line(s) in `original` / event.original

Formats, fields and severities are described in :mod:`logstream.parsers`
(and :mod:`logstream.parsers.ecs` for ``fields: ecs``). The parsed fields
replace the event's (``message`` becomes the text after the line's header,
``@timestamp`` the line's own time); other fields are left alone.

**Streams.** Events are grouped into streams by ``stream_key`` (use a
connection or file id field when the shipper sends one). A new stream's
format is detected from its first line that some parser knows, trying the
formats in order (only those whose lines may start with the line's first
character: each parser's ``starts``); from then on its lines go to that
parser alone. Lines it
does not know are continuation lines (folded, see below), not guesses: the
stream is detected again only after ``redetect_after_lines`` of them in a
row, and then only a line with a timestamp of another format switches it.
A stream detected from a line without a timestamp (bare ``+ cmd``, playbook
output) switches at the first line with a timestamp of another format (the
xtrace lines at the top of a devstack screen log). ``format: <name>``
turns detection off.

**Severity.** Every line the filter recognises gets ``level``. A line that
states no level of its own takes the previous level of its stream -- of the
same process, where the format names one (``program`` and ``pid``: syslog
and the journal interleave programs, ansible.log interleaves runs); the
first such lines get ``default_level``. ``level_original`` keeps
the source's word when it differs from the scale's name. In console output
a warning then colours the lines after it (up to the next xtrace line or
level word); ``inherit_level: false`` gives such lines ``default_level``.

**Time.** ``@timestamp`` becomes the line's own time in UTC with
milliseconds (``2026-03-02T09:15:27.118Z``). Times written without a zone
(oslo, console, ansible.log, syslog, error logs) are read in ``timezone``;
times without a year (syslog, the journal) get the current UTC year, or the
previous one when that would put the line more than a day in the future.
A line whose time does not exist (month 13) is not taken as parsed.
Lines without any time (playbook output, bare xtrace) keep the event's.

**Multiline.** A record is held back until its next line shows that it is
complete: the next record of the stream begins, a bound is reached, the
stream has been quiet for ``multiline_timeout_secs`` (checked on the
pipeline's tick), or the pipeline shuts down (``flush``). Continuation
lines are the lines the stream's format does not know (Python tracebacks,
pretty-printed JSON, ansible result bodies) and, per format, some it does
(oslo ``TRACE`` lines and ERROR traceback lines with the record's timestamp
and PID). They are joined to ``message`` with ``\\n``; the record gets the
tag ``multiline``; blank lines at its end are dropped. Each folded event is
counted as dropped with reason ``merged`` (its text lives on in the record).
A record that reaches ``multiline_max_lines`` or ``multiline_max_bytes`` is
let go tagged ``_multilinelimit``; its remaining lines start a new event
tagged ``_multilinesplit`` (as do continuation lines that arrive after a
record's timeout). Formats whose records are one line (syslog, web, JSON
events) are never held. ``multiline: false`` lets every event go at once.

**Already structured.** An event whose ``format`` field names a format
(the syslog input parses RFC 3164/5424 itself and sets ``format``,
``syslog_*``, ``program``...; or a parse filter ran before) is passed on
untouched: not parsed again, never tagged ``_parsefailure``.

**Failures.** A line no parser knows (or that the stream's format does not
know, when there is no record to continue) is passed on as it came, tagged
``on_failure`` and counted as decode issue ``unparsed``; its ``level`` is
not touched. Blank lines are not failures: they pass with the stream's
level. An event whose source field is not text is offered to the
event-shaped formats (AWX job events, the Ansible logstash callback's
events) and otherwise passed on untouched. Bytes are decoded as UTF-8 (bad
bytes replaced, tagged ``_utf8error``, counted ``invalid_utf8``). Nothing
raises.

Events released by ``tick`` and ``flush`` are counted in ``events_out`` here
(the runtime counts only what ``process`` returns).

With ``fields: ecs`` the level is ``[log][level]``: conditions after the
filter name it so (``[log][level] >= WARNING`` compares on the scale as
``level >= WARNING`` does); filters that read ``level`` itself see none.

Cost: one scan per line and a few dict look-ups (timestamps are converted
once per second of input, level words once). The busy formats' parsers and
the per-line loop below (``process``) also exist compiled
(``logstream/parsers/*.pyx``, Cython); where they are built this filter uses
them, and the Python code here is the reference they are tested against
(``LOGSTREAM_PURE=1`` runs it). Per-stream state is bounded by
``max_streams`` and each held record by the multiline bounds.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any, Final, Literal

from pydantic import Field, field_validator

from logstream.event import TAG_UTF8_ERROR, Batch, Event, add_tag
from logstream.fields import parse_path
from logstream.parsers import FORMATS, Parser, build_parsers
from logstream.parsers.common import Fields, compiled
from logstream.parsers.ecs import apply_ecs, set_original_ecs
from logstream.severity import parse_name
from logstream.streams import (
    TAG_LIMIT,
    TAG_SPLIT,
    GroupingFilter,
    Stream,
    StreamTable,
    check_stream_key,
    key_function,
    source_getter,
)
from logstream.units import BuildContext, FilterConfig

TAG_PARSE_FAILURE: Final = "_parsefailure"
# Processes whose last level a stream remembers (syslog interleaves many).
_MAX_SCOPES: Final = 256
_NO_SCOPE: Final = (None, None)
# Formats that can read an event whose source field is not text.
_EVENT_FORMATS: Final = frozenset(("awx_event", "ansible_logstash"))
# A `format` field naming one of these: the event was structured before (the
# syslog input parses its messages; a parse filter ran already).
_PARSED: Final = frozenset(FORMATS)


class ParseFilterConfig(FilterConfig):
    type: Literal["parse"]
    source: str = Field(default="message", description="Field holding the line to parse.")
    format: str = Field(
        default="auto", description=f"auto, or one of: {', '.join(FORMATS)} (no detection)."
    )
    formats: list[str] | None = Field(
        default=None, description="The formats auto-detection tries, in the documented order."
    )
    fields: Literal["default", "ecs"] = Field(
        default="default", description="Field names: Logstash style, or ECS nested objects."
    )
    timezone: str = Field(default="UTC", description="Zone of timestamps that carry none.")
    default_level: str = Field(
        default="INFO", description="Level of a stream's first lines that state none."
    )
    inherit_level: bool = Field(
        default=True, description="Lines that state no level take the stream's previous one."
    )
    stream_key: list[str] = Field(
        default_factory=lambda: ["host", "path", "type"],
        min_length=1,
        description="Fields whose values name a stream.",
    )
    max_streams: int = Field(default=10_000, ge=1, description="Streams remembered at most.")
    redetect_after_lines: int = Field(
        default=50, ge=1, description="Unknown lines in a row before a stream is detected again."
    )
    multiline: bool = Field(default=True, description="Fold continuation lines into records.")
    multiline_max_lines: int = Field(default=500, ge=1)
    multiline_max_bytes: int = Field(default=1_048_576, ge=1)
    multiline_timeout_secs: float = Field(
        default=1.0, gt=0, description="A record held this long without a new line is let go."
    )
    on_failure: str | None = Field(
        default=TAG_PARSE_FAILURE, description="Tag of lines no parser knows (null: none)."
    )
    keep_original: bool = Field(
        default=False, description="Keep the raw line(s) in `original` (ECS: event.original)."
    )

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        parse_path(value)
        return value

    @field_validator("format")
    @classmethod
    def _valid_format(cls, value: str) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; use auto or one of {', '.join(FORMATS)}")
        return value

    @field_validator("formats")
    @classmethod
    def _valid_formats(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("formats must name at least one format (or be left out)")
        for index, name in enumerate(value):
            if name not in FORMATS:
                raise ValueError(
                    f"formats[{index}]: unknown format {name!r}; use one of {', '.join(FORMATS)}"
                )
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("default_level")
    @classmethod
    def _valid_level(cls, value: str) -> str:
        return parse_name(value).name

    @field_validator("stream_key")
    @classmethod
    def _valid_stream_key(cls, value: list[str]) -> list[str]:
        return check_stream_key(value)

    def build(self, name: str, ctx: BuildContext) -> ParseFilter:
        return ParseFilter(name, ctx, self)


def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    if name.upper() in ("UTC", "Z"):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name!r}; use an IANA name like Europe/Paris") from None


def _dispatch(candidates: list[Parser]) -> dict[str, tuple[Parser, ...]]:
    """ASCII first character -> the candidates whose lines may start with it, in
    order; ``""`` -> every candidate (empty lines, non-ASCII first characters)."""
    table = {"": tuple(candidates)}
    for code in range(128):
        char = chr(code)
        table[char] = tuple(p for p in candidates if p.starts is None or char in p.starts)
    return table


class _Stream(Stream):
    """A stream's format, detection state, levels and held record."""

    __slots__ = ("cut", "levels", "misses", "parser", "raw", "tentative")

    def __init__(self, key: Any, parser: Parser | None) -> None:
        super().__init__(key)
        self.parser = parser
        # Detected from a line without a timestamp: switch at the first line that has one.
        self.tentative = False
        # Lines in a row the stream's format did not know.
        self.misses = 0
        # Last level stated, by (program, pid): (None, None) for single-process formats.
        self.levels: dict[Any, str] = {}
        # Head of a record let go before its end (bound, timeout): its next
        # continuation lines start a split event.
        self.cut: Fields | None = None
        # Raw lines of the held record (keep_original only).
        self.raw: list[str] | None = None


class ParseFilter(GroupingFilter[_Stream]):
    def __init__(self, name: str, ctx: BuildContext, config: ParseFilterConfig) -> None:
        stamps, parsers = build_parsers(ctx.clock, _zone(config.timezone))
        forced = None if config.format == "auto" else parsers[config.format]
        # The compiled loop and its stream states (logstream/parsers/_parse_loop.pyx),
        # where built; the Python ones below are the reference.
        fast = compiled("_parse_loop")
        make_stream: Callable[[Any, Parser | None], _Stream] = (
            _Stream if fast is None else fast.ParseStream
        )
        streams: StreamTable[_Stream] = StreamTable(
            config.max_streams, lambda key: make_stream(key, forced)
        )
        super().__init__(
            name, ctx.registry.unit(name, "filter"), streams, config.multiline_timeout_secs
        )
        self._clock = ctx.clock
        self._stamps = stamps
        names = config.formats or list(FORMATS)
        self._candidates = [parsers[n] for n in FORMATS if n in names]
        # Detection by a line's first character: the candidates that may start so
        # (strong: and may carry a time); other lines are offered to every one.
        self._by_first = _dispatch(self._candidates)
        self._by_first_strong = _dispatch([p for p in self._candidates if p.timestamped])
        self._auto = forced is None
        self._event_parsers = [
            p
            for p in ([forced] if forced is not None else self._candidates)
            if p.name in _EVENT_FORMATS
        ]
        self._get_line = source_getter(parse_path(config.source))
        self._key = key_function(config.stream_key)
        # The default source and a key of three top-level names are read inline.
        source = parse_path(config.source)
        self._source = source[0] if len(source) == 1 and type(source[0]) is str else None
        paths = [parse_path(field) for field in config.stream_key]
        self._key_names = (
            tuple(str(path[0]) for path in paths)
            if len(paths) == 3 and all(len(path) == 1 and type(path[0]) is str for path in paths)
            else None
        )
        self._ecs = config.fields == "ecs"
        # dict.update(event, fields) for the default names: no extra call per line.
        self._apply: Callable[[Event, Fields], None] = apply_ecs if self._ecs else dict.update
        self._default_level = config.default_level
        self._inherit = config.inherit_level
        self._redetect_after = config.redetect_after_lines
        self._multiline = config.multiline
        self._max_lines = config.multiline_max_lines
        self._max_bytes = config.multiline_max_bytes
        self._tag = config.on_failure
        self._keep_original = config.keep_original
        # The lines of `process` below, compiled (not for keep_original: `_record`).
        self._loop: Any = None
        if fast is not None and not self._keep_original:
            self._loop = fast.ParseLoop(self, streams, _PARSED, not self._ecs)

    # ----------------------------------------------------------------- batches

    def process(self, batch: Batch) -> Batch:
        if not batch:
            return batch
        now = self._clock.monotonic()
        self._stamps.refresh()
        if self._loop is not None:
            out: Batch = self._loop.process(batch, now)
            self._count_merged()
            return out
        out = []
        get_line = self._get_line
        key_of = self._key
        table = self._streams
        record = self._record
        # _record's steps are written out below for the common line (no
        # keep_original): a method call per line is a tenth of the filter's cost.
        inline = not self._keep_original
        apply = self._apply
        default_level = self._default_level
        multiline = self._multiline
        open_streams = self._open
        inherit = self._inherit
        last_key: Any = None
        stream: _Stream | None = None
        parsed_formats = _PARSED
        source = self._source
        names = self._key_names
        first, second, third = names if names is not None else ("", "", "")
        for event in batch:
            line = event.get(source) if source is not None else get_line(event)
            key = (
                (event.get(first), event.get(second), event.get(third))
                if names is not None
                else key_of(event)
            )
            if stream is None or key != last_key:
                stream = table.get(key)
                last_key = key
                if table.evicted:
                    self._release_evicted(out)
            fmt = event.get("format")
            if type(fmt) is str and fmt in parsed_formats:
                self._already_parsed(stream, event, out)
                continue
            if type(line) is not str:
                line = self._coerce(line, event)
                if line is None:
                    self._no_text(stream, event, out)
                    continue
            if line and line[-1] in "\r\n":
                line = line.rstrip("\r\n")
            parser = stream.parser
            if parser is not None:
                fields = parser.parse(line, event)
                if fields is not None:
                    stream.misses = 0
                    if not inline:
                        record(stream, parser, event, fields, line, now, out)
                        continue
                    if stream.tentative and "@timestamp" in fields:
                        stream.tentative = False
                    held = stream.event
                    if held is not None:
                        continues = parser.continues
                        if continues is not None:
                            text = continues(stream.head, fields)
                            if text is not None:
                                self._fold(stream, event, text, line, now, out)
                                continue
                        if stream.parts is None:
                            stream.event = None  # a one-line record: nothing to join
                            out.append(held)
                        else:
                            out.append(self._finish(stream))
                    stream.cut = None
                    if parser.states_level:
                        if "level" not in fields:
                            fields["level"] = default_level
                    else:  # _level, inline
                        level = fields.get("level")
                        levels = stream.levels
                        scope = (fields.get("program"), fields.get("pid"))
                        if level is None:
                            fields["level"] = (
                                levels.get(scope, default_level) if inherit else default_level
                            )
                        elif levels.get(scope) != level:
                            if len(levels) >= _MAX_SCOPES:
                                levels.clear()
                            levels[scope] = level
                    apply(event, fields)
                    if multiline and parser.folds:
                        stream.start(event, fields, fields.get("message", line), now)
                        open_streams[stream.key] = stream
                    else:
                        out.append(event)
                    continue
            self._unknown(stream, event, line, now, out)
        self._count_merged()
        return out

    # ----------------------------------------------------------------- lines

    def _record(
        self,
        stream: _Stream,
        parser: Parser,
        event: Event,
        fields: Fields,
        line: str,
        now: float,
        out: Batch,
    ) -> None:
        """A line its format knows: a record of its own, or part of the held one.

        (``process`` runs the same steps inline for lines without keep_original.)"""
        if stream.tentative and "@timestamp" in fields:
            stream.tentative = False
        held = stream.event
        if held is not None:
            continues = parser.continues
            if continues is not None:
                text = continues(stream.head, fields)
                if text is not None:
                    self._fold(stream, event, text, line, now, out)
                    return
            if stream.parts is None and stream.raw is None:
                stream.event = None  # a one-line record: nothing to join
                out.append(held)
            else:
                out.append(self._finish(stream))
        stream.cut = None
        if parser.states_level:
            if "level" not in fields:
                fields["level"] = self._default_level
        else:
            self._level(stream, fields)
        self._apply(event, fields)
        if self._multiline and parser.folds:
            stream.start(event, fields, fields.get("message", line), now)
            if self._keep_original:
                stream.raw = [line]
            self._open[stream.key] = stream
        else:
            if self._keep_original:
                self._set_original(event, line)
            out.append(event)

    def _level(self, stream: _Stream, fields: Fields) -> None:
        """Inherit the level of the line's process when it states none; remember it when it does."""
        level = fields.get("level")
        levels = stream.levels
        scope = (fields.get("program"), fields.get("pid"))
        if level is None:
            fields["level"] = (
                levels.get(scope, self._default_level) if self._inherit else self._default_level
            )
        elif levels.get(scope) != level:
            if len(levels) >= _MAX_SCOPES:
                levels.clear()
            levels[scope] = level

    def _unknown(self, stream: _Stream, event: Event, line: str, now: float, out: Batch) -> None:
        """A line the stream's format does not know (or the stream has none yet)."""
        parser = stream.parser
        if parser is None:
            found = self._detect(line, event, None, strong=False)
            if found is not None:
                stream.parser, fields = found
                stream.tentative = "@timestamp" not in fields
                stream.misses = 0
                self._record(stream, stream.parser, event, fields, line, now, out)
                return
        else:
            stream.misses += 1
            if self._auto and (stream.tentative or stream.misses > self._redetect_after):
                found = self._detect(line, event, parser, strong=True)
                if found is not None:
                    if stream.event is not None:
                        out.append(self._finish(stream))
                    stream.parser, fields = found
                    stream.tentative = False
                    stream.misses = 0
                    stream.cut = None
                    self._record(stream, stream.parser, event, fields, line, now, out)
                    return
            if stream.event is not None:
                self._fold(stream, event, line, line, now, out)
                return
            if stream.cut is not None and self._multiline and parser.folds:
                head, stream.cut = stream.cut, None
                self._split(stream, head, event, line, line, now)
                return
        if not line or line.isspace():
            self._apply(event, {"level": stream.levels.get(_NO_SCOPE, self._default_level)})
        else:
            if self._tag is not None:
                add_tag(event, self._tag)
            self.metrics.decode_issue("unparsed")
        out.append(event)

    def _detect(
        self, line: str, event: Event, skip: Parser | None, *, strong: bool
    ) -> tuple[Parser, Fields] | None:
        table = self._by_first_strong if strong else self._by_first
        first = line[:1]
        for parser in table[first] if first in table else table[""]:
            if parser is skip:
                continue
            fields = parser.parse(line, event)
            if fields is not None and (not strong or "@timestamp" in fields):
                return parser, fields
        return None

    def _already_parsed(self, stream: _Stream, event: Event, out: Batch) -> None:
        """An event an input (or an earlier parse filter) already structured: passed on."""
        if stream.event is not None:
            out.append(self._finish(stream))  # keeps the stream's order
            self._open.pop(stream.key, None)
        out.append(event)

    def _no_text(self, stream: _Stream, event: Event, out: Batch) -> None:
        """An event whose source field is not text: only event-shaped formats may read it."""
        if stream.event is not None:
            out.append(self._finish(stream))  # keeps the stream's order
            self._open.pop(stream.key, None)
        for parser in self._event_parsers:
            fields = parser.parse("", event)
            if fields is not None:
                if "level" not in fields:
                    fields["level"] = stream.levels.get(_NO_SCOPE, self._default_level)
                self._apply(event, fields)
                break
        out.append(event)

    # ----------------------------------------------------------------- groups

    def _fold(
        self, stream: _Stream, event: Event, text: str, line: str, now: float, out: Batch
    ) -> None:
        if stream.add(text, now, self._max_lines, self._max_bytes):
            self._merged += 1
            if stream.raw is not None:
                stream.raw.append(line)
            return
        head = stream.head
        held = self._finish(stream)
        add_tag(held, TAG_LIMIT)
        out.append(held)
        self._split(stream, head, event, text, line, now)

    def _split(
        self, stream: _Stream, head: Fields, event: Event, text: str, line: str, now: float
    ) -> None:
        """Start a record that continues one already let go (same level, format)."""
        parser = stream.parser
        fields: Fields = {
            "format": parser.name if parser is not None else "",
            "level": head.get("level", self._default_level),
            "message": text,
        }
        self._apply(event, fields)
        add_tag(event, TAG_SPLIT)
        stream.start(event, head, text, now)
        if self._keep_original:
            stream.raw = [line]
        self._open[stream.key] = stream

    def _finish(self, stream: _Stream) -> Event:
        raw = stream.raw
        event = stream.finish(trim=True)
        if raw is not None:
            stream.raw = None
            self._set_original(event, "\n".join(raw))
        return event

    def _mark_cut(self, stream: _Stream) -> None:
        # Its continuation lines start a split event with the record's level and format.
        stream.cut = stream.head

    # ----------------------------------------------------------------- helpers

    def _coerce(self, value: Any, event: Event) -> str | None:
        if isinstance(value, bytes | bytearray):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                add_tag(event, TAG_UTF8_ERROR)
                self.metrics.decode_issue("invalid_utf8")
                return bytes(value).decode("utf-8", "replace")
        return None

    def _set_original(self, event: Event, text: str) -> None:
        if self._ecs:
            set_original_ecs(event, text)
        else:
            event["original"] = text
