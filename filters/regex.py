"""The ``regex`` filter: named groups of user patterns become event fields.

::

    - type: regex
      source: message                 # the field to match (default), or a [a][b] path
      patterns:                       # tried in order; the first that matches wins
        - '^(?P<client>\\S+) \\S+ \\S+ \\[(?P<when>[^\\]]+)\\] "(?P<verb>[A-Z]+) (?P<path>\\S+)'
        - 'user=(?P<user>\\w+)'
      on_failure: _regexparsefailure  # tag when no pattern matches (null: no tag)
      overwrite: false                # may a group replace a field the event already has?

Patterns are Python regular expressions, searched (not anchored: use ``^``)
and compiled once; each needs at least one named group ``(?P<name>...)``. A
group that did not take part in the match (an optional one) sets nothing.
Only string values are matched; an event whose source field is missing or
not a string is passed on unchanged and untagged.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from logstream.event import Batch, add_tag
from logstream.fields import getter, parse_path
from logstream.units import BuildContext, Filter, FilterConfig


class RegexFilterConfig(FilterConfig):
    type: Literal["regex"]
    source: str = Field(default="message", description="Field the patterns are matched against.")
    patterns: list[str] = Field(
        min_length=1, description="Regexes with named groups; the first that matches wins."
    )
    on_failure: str | None = Field(
        default="_regexparsefailure", description="Tag added when no pattern matches."
    )
    overwrite: bool = Field(
        default=False, description="Whether a group may replace a field the event already has."
    )

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        parse_path(value)
        return value

    @field_validator("patterns")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            _compile(pattern, index)
        return value

    def build(self, name: str, ctx: BuildContext) -> RegexFilter:
        return RegexFilter(name, ctx, self)


def _compile(pattern: str, index: int) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as error:
        raise ValueError(f"patterns[{index}] {pattern!r} is not a valid regex: {error}") from None
    if not compiled.groupindex:
        raise ValueError(
            f"patterns[{index}] {pattern!r} has no named group; name what it captures, "
            "e.g. (?P<user>\\w+)"
        )
    return compiled


class RegexFilter(Filter):
    def __init__(self, name: str, ctx: BuildContext, config: RegexFilterConfig) -> None:
        super().__init__(name, ctx.registry.unit(name, "filter"))
        self._get = getter(parse_path(config.source))
        self._searches = tuple(
            _compile(pattern, index).search for index, pattern in enumerate(config.patterns)
        )
        self._tag = config.on_failure
        self._overwrite = config.overwrite

    def process(self, batch: Batch) -> Batch:
        get, searches, tag, overwrite = self._get, self._searches, self._tag, self._overwrite
        for event in batch:
            text = get(event)
            if type(text) is not str:
                continue
            for search in searches:
                match = search(text)
                if match is not None:
                    for key, value in match.groupdict().items():
                        if value is not None and (overwrite or key not in event):
                            event[key] = value
                    break
            else:
                if tag is not None:
                    add_tag(event, tag)
        return batch
