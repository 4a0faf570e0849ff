"""oslo.log, the logging of OpenStack services.

::

    2013-09-27 18:22:35.392 6602 AUDIT cinder.api.extensions [-] Loaded extension: os-hosts
    2013-09-27 18:22:40.016 INFO nova.osapi_compute.wsgi.server [req-9f1c... a1b2 c3d4] GET /v2 ...
    2013-09-27 18:22:08.332 2515 DEBUG nova.wsgi [-] Loading app ec2 load_app /opt/nova/wsgi.py:484
    2013-09-27 18:23:42.923 2820 TRACE neutron.api.v2.resource Traceback (most recent call last):

``timestamp [pid] LEVEL logger [context] message [funcName path:line]``: the
PID is absent on some request-scoped lines; the context is ``-`` or
``req-<id> <user> <project>`` (newer releases put a global request id and
domain ids around it); DEBUG lines (and, in some services, all lines) end with the function and
source location (newer ones with ``from (pid=N)`` before them). ``TRACE`` lines are
the traceback of the ERROR record before them: they are read as ERROR
(``level_original: TRACE``) and fold into that record when they share its
timestamp, PID and logger; so do the ERROR traceback lines newer releases
write instead.

The body after the timestamp and PID is the same in the systemd journal
(:mod:`logstream.parsers.syslog` uses :func:`parse_body`).
"""

from __future__ import annotations

import re
from typing import Final

from logstream.event import Event
from logstream.parsers.common import (
    DIGITS,
    Continues,
    Fields,
    LevelMap,
    Timestamps,
    compiled,
    set_level,
)
from logstream.severity import Severity

NAME: Final = "oslo"

_LINE: Final = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3,6}) (?:(\d{1,10}) )?([A-Z]+) ([^\s\[]\S*)"
    r"(?: \[([^\]]*)\])?(?: (.*))?\Z",
    re.DOTALL | re.ASCII,
)
# The same without timestamp and PID (inside a journal or syslog line). The
# context is required unless the level is TRACE, so free text that merely
# starts with a level word is not taken for oslo.
_BODY: Final = re.compile(
    r"([A-Z]+) ([^\s\[]\S*)(?: \[([^\]]*)\])?(?: (.*))?\Z", re.DOTALL | re.ASCII
)

_DIGITS: Final = frozenset("0123456789")
_NONE: Final = frozenset(("-", "None", ""))
# oslo's TRACE is the exception trace of an ERROR record.
OVERRIDES: Final = {"TRACE": Severity.ERROR}


def oslo_levels() -> LevelMap:
    return LevelMap(OVERRIDES)


def _context(fields: Fields, context: str) -> None:
    """``req-<id> <user> <project> ...``: the request id and the ids after it."""
    if context.startswith("req-"):
        tokens = context.split(" ", 3)
        fields["request_id"] = tokens[0]
        if len(tokens) > 1 and tokens[1] not in _NONE:
            fields["user_id"] = tokens[1]
        if len(tokens) > 2 and tokens[2] not in _NONE:
            fields["project_id"] = tokens[2]
        return
    tokens = context.split()
    for index, token in enumerate(tokens):
        if token.startswith("req-"):
            fields["request_id"] = token
            user = tokens[index + 1] if index + 1 < len(tokens) else "-"
            project = tokens[index + 2] if index + 2 < len(tokens) else "-"
            if user not in _NONE:
                fields["user_id"] = user
            if project not in _NONE:
                fields["project_id"] = project
            return


def _message(fields: Fields, message: str) -> None:
    if message.startswith("[instance: "):
        end = message.find("] ", 11)
        if end > 0:
            fields["instance_id"] = message[11:end]
            message = message[end + 2 :]
    if message[-1:] in _DIGITS:
        # "... funcName /path/file.py:123", maybe "... from (pid=123) funcName /path:123"
        # (oslo's debug suffix; some services put it on every level). Found
        # from the end with offsets: nothing is copied but the parts kept.
        space = message.rfind(" ")
        colon = message.rfind(":", space + 1)
        digits = message[colon + 1 :]
        if (
            space > 0
            and colon > 0
            and message.endswith(".py", space + 1, colon)
            and len(digits) <= 18  # is_number, inline
            and digits.isascii()
            and digits.isdigit()
        ):
            space2 = message.rfind(" ", 0, space)
            function = message[space2 + 1 : space]
            if space2 >= 0 and function.isidentifier():
                fields["function"] = function
                fields["file"] = message[space + 1 : colon]
                fields["line"] = int(digits)
                if space2 > 0 and message[space2 - 1] == ")":
                    pid_at = message.rfind(" from (pid=", 0, space2)
                    if pid_at >= 0:
                        space2 = pid_at
                message = message[:space2]
    fields["message"] = message


def parse_body(text: str, levels: LevelMap, fields: Fields) -> bool:
    """Add the fields of an oslo body (``LEVEL logger [context] message``) to ``fields``.

    Returns ``False`` (``fields`` unchanged) when ``text`` is not one.
    """
    match = _BODY.match(text)
    if match is None:
        return False
    word, logger, context, message = match.groups()
    info = levels.get(word)
    if info is None or (context is None and word != "TRACE"):
        return False
    set_level(fields, info)
    fields["logger"] = logger
    if context is not None:
        _context(fields, context)
    _message(fields, message or "")
    return True


def continues(head: Fields, line: Fields) -> str | None:
    """A TRACE line, or an ERROR line of the same record, folds into the ERROR record."""
    if line["level"] != "ERROR":
        return None
    if (
        line["@timestamp"] != head.get("@timestamp")
        or line.get("pid") != head.get("pid")
        or line["logger"] != head.get("logger")
    ):
        return None
    if line.get("level_original") == "TRACE" or head.get("level") == "ERROR":
        return str(line["message"])
    return None


class OsloParser:
    name: str = NAME
    folds: bool = True
    starts: str | None = DIGITS
    timestamped: bool = True
    states_level: bool = True

    def __init__(self, stamps: Timestamps) -> None:
        self._match = _LINE.match
        self._levels = oslo_levels()
        self._known_levels = self._levels.known
        self._stamps = stamps
        self._known_stamps = stamps.known_local
        self.continues: Continues | None = continues
        fast = compiled()
        if fast is not None:  # the same reading, without the regex
            self.parse = fast.Oslo(  # type: ignore[method-assign]
                NAME, self._known_levels, self._levels.get, self._known_stamps, stamps.local
            ).parse
            self.continues = fast.oslo_continues

    def parse(self, line: str, event: Event) -> Fields | None:
        match = self._match(line)
        if match is None:
            return None
        stamp, fraction, pid, word, logger, context, message = match.groups()
        info = self._known_levels.get(word) or self._levels.get(word)
        if info is None:
            return None
        prefix = self._known_stamps.get(stamp) or self._stamps.local(stamp)
        if prefix is None:
            return None
        fields: Fields = {
            "@timestamp": f"{prefix}.{fraction[:3]}Z",
            "format": NAME,
            "level": info[0],
            "logger": logger,
        }
        if info[1] is not None:
            fields["level_original"] = info[1]
        if pid is not None:
            fields["pid"] = int(pid)
        if context is not None and context != "-":
            _context(fields, context)
        if not message:
            fields["message"] = ""
        elif message[0] == "[" or message[-1] in _DIGITS:
            _message(fields, message)
        else:
            fields["message"] = message
        return fields
