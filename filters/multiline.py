"""The ``multiline`` filter: Logstash-style folding of lines into one event, by pattern.

::

    - type: multiline
      pattern: '^\\s'                  # a regex, searched in each line
      negate: false                   # true: the lines that do NOT match
      what: previous                  # previous: such a line belongs to the event before it
                                      # next: such a line continues onto the event after it
      source: message                 # the field holding the line (name or [a][b] path)
      stream_key: [host, path, type]  # lines are joined only within one stream
      max_lines: 500                  # lines of one event at most
      max_bytes: 1048576              # bytes of its text at most (UTF-8, separators included)
      timeout_secs: 1.0               # an event held this long without a new line is let go
      max_streams: 10000              # streams remembered; least recently seen let go first
      separator: "\\n"

The same settings mean what they mean in Logstash's ``multiline`` codec:
``pattern: '^\\s', what: previous`` joins indented lines (a Java or Python
stack trace) to the line above; ``pattern: '\\\\$', what: next`` joins a
line ending in a backslash to the one after it; ``pattern: '^\\d{4}-',
negate: true, what: previous`` joins every line not starting with a date
to the line above.

The first event of a group keeps its fields; the lines are joined into its
``source`` field and it gets the tag ``multiline``. Each event joined into
another is counted as dropped with reason ``merged``. A group that reaches
``max_lines`` or ``max_bytes`` is let go tagged ``_multilinelimit`` and the
rest of it starts a new event tagged ``_multilinesplit`` (as do lines that
continue a group let go by its timeout). An event whose ``source`` is not a
string ends its stream's group and passes on untouched.

With ``what: previous`` every line is held until the next line of its
stream shows whether more belongs to it (or ``timeout_secs`` passes:
checked on the pipeline's tick); ``flush`` at shutdown lets everything go.
Events released by ``tick`` and ``flush`` are counted in ``events_out`` here.
For log formats ``parse`` knows, its own multiline handling needs no pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from logstream.event import Batch, Event, add_tag
from logstream.fields import parse_path, setter
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


class MultilineFilterConfig(FilterConfig):
    type: Literal["multiline"]
    pattern: str = Field(description="Regex searched in each line.")
    negate: bool = Field(default=False, description="Act on the lines that do not match.")
    what: Literal["previous", "next"] = Field(
        default="previous",
        description="previous: the line belongs to the event before; next: to the one after.",
    )
    source: str = Field(default="message", description="Field holding the line.")
    stream_key: list[str] = Field(
        default_factory=lambda: ["host", "path", "type"],
        min_length=1,
        description="Fields whose values name a stream.",
    )
    max_lines: int = Field(default=500, ge=1)
    max_bytes: int = Field(default=1_048_576, ge=1)
    timeout_secs: float = Field(default=1.0, gt=0)
    max_streams: int = Field(default=10_000, ge=1)
    separator: str = Field(default="\n")

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        _compile(value)
        return value

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        parse_path(value)
        return value

    @field_validator("stream_key")
    @classmethod
    def _valid_stream_key(cls, value: list[str]) -> list[str]:
        return check_stream_key(value)

    def build(self, name: str, ctx: BuildContext) -> MultilineFilter:
        return MultilineFilter(name, ctx, self)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as error:
        raise ValueError(f"pattern {pattern!r} is not a valid regex: {error}") from None


class _Stream(Stream):
    __slots__ = ("cut",)

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        # A group of this stream was let go before its end (bound or timeout).
        self.cut = False


class MultilineFilter(GroupingFilter[_Stream]):
    def __init__(self, name: str, ctx: BuildContext, config: MultilineFilterConfig) -> None:
        streams: StreamTable[_Stream] = StreamTable(config.max_streams, _Stream)
        super().__init__(name, ctx.registry.unit(name, "filter"), streams, config.timeout_secs)
        self._clock = ctx.clock
        self._search = _compile(config.pattern).search
        self._negate = config.negate
        self._previous = config.what == "previous"
        path = parse_path(config.source)
        self._get = source_getter(path)
        self._put: Callable[[Event, str], object] | None
        if len(path) == 1 and type(path[0]) is str:
            top = path[0]
            self._put = None if top == "message" else (lambda e, text: e.__setitem__(top, text))
        else:
            self._put = setter(path)
        self._key = key_function(config.stream_key)
        self._max_lines = config.max_lines
        self._max_bytes = config.max_bytes
        self._separator = config.separator

    def process(self, batch: Batch) -> Batch:
        if not batch:
            return batch
        now = self._clock.monotonic()
        out: Batch = []
        search, negate, previous = self._search, self._negate, self._previous
        get, key_of, table = self._get, self._key, self._streams
        for event in batch:
            line = get(event)
            stream = table.get(key_of(event))
            if table.evicted:
                self._release_evicted(out)
            if type(line) is not str:
                if stream.event is not None:
                    out.append(self._finish(stream))
                out.append(event)
                continue
            joins = (search(line) is not None) is not negate
            if previous:
                if joins and stream.event is not None:
                    self._fold(stream, event, line, now, out)
                else:
                    if stream.event is not None:
                        out.append(self._finish(stream))
                    self._start(stream, event, line, now, split=joins and stream.cut)
            elif stream.event is not None:
                self._fold(stream, event, line, now, out)
                if not joins and stream.event is not None:
                    out.append(self._finish(stream))
            elif joins or stream.cut:
                self._start(stream, event, line, now, split=stream.cut)
                if not joins:
                    out.append(self._finish(stream))
            else:
                out.append(event)
        self._count_merged()
        return out

    def _start(self, stream: _Stream, event: Event, line: str, now: float, *, split: bool) -> None:
        if split:
            add_tag(event, TAG_SPLIT)
        stream.cut = False
        stream.start(event, {}, line, now)
        self._open[stream.key] = stream

    def _fold(self, stream: _Stream, event: Event, line: str, now: float, out: Batch) -> None:
        if stream.add(line, now, self._max_lines, self._max_bytes):
            self._merged += 1
            return
        held = self._finish(stream)
        add_tag(held, TAG_LIMIT)
        out.append(held)
        self._start(stream, event, line, now, split=True)

    def _finish(self, stream: _Stream) -> Event:
        return stream.finish(self._separator, put=self._put)

    def _mark_cut(self, stream: _Stream) -> None:
        # Lines that continue the group start an event; the group's head is not needed.
        stream.cut = True
