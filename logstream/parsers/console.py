"""CI console output: ``YYYY-MM-DD HH:MM:SS.mmm | text`` and bash xtrace.

::

    2014-03-17 16:11:24.177 | + echo_summary 'Installing package prerequisites'
    2014-03-17 16:12:05.250 | warning: no files found matching '*.html'
    2014-03-17 16:12:13.506 | Setting up erlang-asn1 (1:14.b.4-dfsg-1ubuntu1) ...
    + exec /bin/bash -c 'cd /opt/stack/nova && /usr/local/bin/nova-api'

The text after ``| `` is the message. An xtrace line (``+ cmd``, ``++ cmd``
in a subshell) puts the command in ``command`` and states INFO; a line
starting with a level word (``warning:``, ``ERROR:``, ``[Warning]``) states
that level; ``Traceback (most recent call last):`` states ERROR and the
Python traceback that follows (indented lines, the exception line) folds
into it. Other lines state no level: they take the previous line's.

A bare xtrace line (no timestamp, as at the top of a devstack screen log)
is console output too, but weak evidence: a stream detected from it is
detected again at the next line of another format that has a timestamp.
"""

from __future__ import annotations

import re
from typing import Final

from logstream.event import Event
from logstream.parsers.common import (
    DIGITS,
    TB_NONE,
    TB_OPEN,
    TRACEBACK_START,
    Continues,
    Fields,
    LevelMap,
    Timestamps,
    compiled,
    leading_level,
    set_level,
    strip_ansi,
    traceback_continues,
)
from logstream.severity import Severity

NAME: Final = "console"

_LINE: Final = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3,6}) \| ?(.*)\Z", re.DOTALL | re.ASCII
)
_XTRACE: Final = re.compile(r"(\+{1,16}) (.*)\Z", re.DOTALL)
_INFO: Final = Severity.INFO.name
_ERROR: Final = Severity.ERROR.name


def continues(head: Fields, line: Fields) -> str | None:
    """Lines of a Python traceback fold into the record that opened it."""
    state = head.get("_tb")
    if state is None:
        opened = str(head.get("message", "")).startswith(TRACEBACK_START)
        state = head["_tb"] = TB_OPEN if opened else TB_NONE
    if state == TB_NONE:
        return None
    text = str(line.get("message", ""))
    return text if traceback_continues(head, text, start_folds=False) else None


class ConsoleParser:
    name: str = NAME
    folds: bool = True
    starts: str | None = DIGITS + "+"
    timestamped: bool = True
    states_level: bool = False

    def __init__(self, stamps: Timestamps) -> None:
        self._match = _LINE.match
        self._xtrace = _XTRACE.match
        self._stamps = stamps
        self._levels = LevelMap()
        self.continues: Continues | None = continues
        fast = compiled("_console_fast")
        if fast is not None:  # the same reading, without the regexes
            self.parse = fast.Console(  # type: ignore[method-assign]
                NAME,
                self._levels,
                self._levels.known,
                self._levels.get,
                stamps.known_local,
                stamps.local,
            ).parse

    def parse(self, line: str, event: Event) -> Fields | None:
        match = self._match(line)
        if match is None:
            if line[:1] == "+":
                xtrace = self._xtrace(line)
                if xtrace is not None:
                    return {
                        "format": NAME,
                        "level": _INFO,
                        "command": xtrace.group(2),
                        "message": line,
                    }
            return None
        stamp, fraction, text = match.groups()
        prefix = self._stamps.local(stamp)
        if prefix is None:
            return None
        if "\x1b" in text:
            text = strip_ansi(text)
        fields: Fields = {
            "@timestamp": f"{prefix}.{fraction[:3]}Z",
            "format": NAME,
            "message": text,
        }
        first = text[:1]
        if first == "+":
            xtrace = self._xtrace(text)
            if xtrace is not None:
                fields["command"] = xtrace.group(2)
                fields["level"] = _INFO
                return fields
        elif first == "T" and text.startswith(TRACEBACK_START):
            fields["level"] = _ERROR
            return fields
        info = leading_level(text, self._levels)
        if info is not None:
            set_level(fields, info)
        return fields
