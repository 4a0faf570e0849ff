"""syslog files (RFC 3164 shape, with or without ``<PRI>``), RFC 5424, and the
systemd journal as text.

::

    Jun  9 15:41:36 node-1 object-server: Started child 32090            (syslog)
    <34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick  (syslog)
    <165>1 2003-10-11T22:14:15.003Z host.example.com evntslog - ID47 [ex@32473 iut="3"] hi
                                                                          (rfc5424)
    -- Logs begin at Tue 2017-03-28 12:02:58 UTC, end at Tue 2017-03-28 13:16:45 UTC. --
    Mar 28 12:20:44.172534 node-1 cinder-api[8526]: DEBUG cinder.api [-] Loading ...
                                                                          (journal)

The variants read (each with or without ``<PRI>``), as their writers define them:

- RFC 3164 / BSD: ``Mmm dd hh:mm:ss`` with the day space-padded (``Jun  9``) or
  not (``Apr 4``), optionally with a year (``Jun  9 2021 15:41:36``) and a
  fraction of a second;
- rsyslog's ``RSYSLOG_FileFormat`` / ``RSYSLOG_SyslogProtocol23Format`` time
  (RFC 3339, high precision): ``2018-08-14T14:30:02.203151+02:00`` (``Z``,
  ``+hh:mm`` or ``+hhmm``; no zone = the configured zone);
- journalctl ``-o short`` (the BSD shape), ``short-precise`` (microseconds),
  ``short-iso`` and ``short-iso-precise`` (``2017-03-28T12:20:44+0000``);
- the hostname may be missing (``Jun  9 15:50:06 tgtd: msg``); the tag is
  ``prog[pid]:`` or ``prog:``, and may itself hold colons (``app:worker[7]:``);
  a non-numeric ``[id]`` is kept as ``syslog_procid``.

Severity comes from ``<PRI>`` when there is one (``syslog_facility`` and
``syslog_severity`` keep its numbers), else from the message: an oslo body
(``LEVEL logger [context] ...``, as devstack's services write to the journal)
gives its level and logger, request id and source location; a message that
starts with a level word (``ERROR ...``, ``warning: ...``) gives that word.
Other lines state no level (they take the previous one of the same program).

Year-less timestamps get a year (see
:class:`~logstream.parsers.common.Timestamps`). A line without ``<PRI>``
whose time has a fraction of a second in the BSD shape (``short-precise``)
or a ``+hhmm`` zone (journalctl's ``short-iso``) is a ``journal`` line;
others are ``syslog`` lines (the same fields; journal ``short`` output is
exactly syslog's shape). The journal's ``-- Logs begin at ... --`` and
``-- Reboot --`` lines belong to it too. In the journal, oslo tracebacks
(ERROR lines of the same process and logger) fold into the ERROR record
they follow.

RFC 5424 (``<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG``):
VERSION is 1 to 3 digits; a leap second (``:60``) loses only the time (no
``@timestamp``), another invalid time refuses the line; PROCID is a string
(``pid`` when it is a number, else ``syslog_procid``); structured data
becomes ``syslog_sd`` (``{SD-ID: {name: value}}``); a repeated SD-ID or
parameter name keeps every value (the values of a repeated name become a
list); ``\\"``, ``\\\\`` and ``\\]`` are unescaped, other backslashes kept
as written, and an unescaped ``]`` or ``"`` inside a value refuses the line
(RFC 5424 section 6.3.3).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from logstream.event import Event
from logstream.parsers import oslo
from logstream.parsers.common import (
    DIGITS,
    MONTHS,
    UPPER,
    Continues,
    Fields,
    LevelMap,
    Timestamps,
    compiled,
    frac3,
    is_number,
    leading_level,
    set_level,
    strip_ansi,
    traceback_continues,
)
from logstream.severity import from_syslog

SYSLOG: Final = "syslog"
JOURNAL: Final = "journal"
RFC5424: Final = "rfc5424"

_RFC3164: Final = re.compile(
    r"(?:<(\d{1,3})>)?"
    r"(?:([A-Z][a-z]{2}) {1,2}(\d{1,2}) (?:(\d{4}) )?(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?"
    r"|(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?)"
    r" (\S*)(?: (.*))?\Z",
    re.DOTALL | re.ASCII,
)
# "tag[pid]: message" or "tag: message" (the tag is the program; it may hold
# colons: the shortest tag followed by ": " or the end wins).
_TAG: Final = re.compile(
    r"([^\s\[\]]{1,128}?)(?:\[([^\s\[\]]{1,128})\])?:(?: (.*))?\Z", re.DOTALL | re.ASCII
)
_JOURNAL_META: Final = re.compile(
    r"-- (?:Logs begin at \w{3} (\S+ \S+) (\w+),.*|[^-].*) --\Z", re.ASCII
)


def _program(fields: Fields, rest: str) -> str:
    """Take ``tag[pid]:`` off the message; returns the message."""
    match = _TAG.match(rest)
    if match is None:
        return rest
    program, pid, message = match.groups()
    fields["program"] = program
    if pid is not None:
        if len(pid) <= 10 and pid.isascii() and pid.isdigit():  # is_number, inline
            fields["pid"] = int(pid)
        else:
            fields["syslog_procid"] = pid
    return message or ""


def _message_level(fields: Fields, message: str, oslo_levels: LevelMap, levels: LevelMap) -> None:
    """Level (and oslo fields) from the message text; sets ``message``."""
    if "\x1b" in message:
        message = strip_ansi(message)
    first = message[:1]
    if "A" <= first <= "Z" and oslo.parse_body(message, oslo_levels, fields):
        return
    fields["message"] = message
    info = leading_level(message, levels)
    if info is not None:
        set_level(fields, info)


def journal_continues(head: Fields, line: Fields) -> str | None:
    """ERROR lines of one process and logger continuing a traceback (or TRACE lines)."""
    if line.get("level") != "ERROR" or "logger" not in line:
        return None
    if (
        line.get("pid") != head.get("pid")
        or line.get("program") != head.get("program")
        or line["logger"] != head.get("logger")
        or head.get("level") != "ERROR"
    ):
        return None
    text = str(line.get("message", ""))
    if line.get("level_original") == "TRACE" or traceback_continues(head, text):
        return text
    return None


class SyslogParser:
    """RFC 3164 lines (``syslog``); with ``journal=True``, journal text (``journal``)."""

    def __init__(self, stamps: Timestamps, *, journal: bool) -> None:
        self.name = JOURNAL if journal else SYSLOG
        self.folds = journal
        # <PRI>, a month name, an ISO date; the journal's "-- Logs begin ... --"
        self.starts: str | None = "<" + UPPER + DIGITS + ("-" if journal else "")
        self.timestamped = True
        self.states_level = False
        self.continues: Continues | None = journal_continues if journal else None
        self._journal = journal
        self._match = _RFC3164.match
        self._stamps = stamps
        self._oslo_levels = oslo.oslo_levels()
        self._levels = LevelMap()
        fast = compiled("_syslog_fast")
        if fast is not None:  # the same reading, without the regexes
            self.parse = fast.Syslog(  # type: ignore[method-assign]
                self.name, journal, stamps, self._oslo_levels, self._levels, _parse_iso, self.parse
            ).parse

    def parse(self, line: str, event: Event) -> Fields | None:
        match = self._match(line)
        if match is None:
            if self._journal and line.startswith("-- "):
                return self._meta(line)
            return None
        pri, month, day, year, clock, fraction, iso, iso_fraction, zone, host, rest = match.groups()
        if month is not None:
            if self._journal and (fraction is None or pri is not None):
                return None
            if year is None:
                prefix = self._stamps.yearless(month, day, clock)
            else:
                number = MONTHS.get(month)
                if number is None:
                    return None
                prefix = self._stamps.local(f"{year}-{number:02d}-{int(day):02d} {clock}")
        else:
            fraction = iso_fraction
            if self._journal and (
                pri is not None or zone is None or zone == "Z" or zone[-3] == ":"
            ):
                return None  # journalctl's short-iso writes +hhmm
            if zone is None:
                prefix = self._stamps.local(iso)
            else:
                prefix = self._stamps.with_offset(iso + zone, _parse_iso)
        if prefix is None:
            return None
        fields: Fields = {"@timestamp": f"{prefix}.{frac3(fraction)}Z", "format": self.name}
        if rest is None:
            rest = ""
        if host.endswith(":") or (host.endswith("]:") and "[" in host):
            rest = f"{host} {rest}"  # no hostname: "Jun  9 15:50:06 tgtd: ..."
        elif host:
            fields["host"] = host
        message = _program(fields, rest)
        if pri is not None:
            number = int(pri)
            if number > 191:
                return None
            fields["syslog_facility"] = number >> 3
            fields["syslog_severity"] = number & 7
            fields["level"] = from_syslog(number & 7).name
            fields["message"] = strip_ansi(message)
        else:
            _message_level(fields, message, self._oslo_levels, self._levels)
        return fields

    def _meta(self, line: str) -> Fields | None:
        match = _JOURNAL_META.match(line)
        if match is None:
            return None
        fields: Fields = {"format": JOURNAL, "message": line}
        begin, zone = match.groups()
        if begin is not None:
            stamp = self._stamps.iso(begin) if zone == "UTC" else None
            if stamp is not None:
                fields["@timestamp"] = stamp
        return fields


# --------------------------------------------------------------------------- RFC 5424

_HEADER: Final = re.compile(
    r"<(\d{1,3})>([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+)(?: (.*))?\Z", re.DOTALL | re.ASCII
)
# SD-NAME: printable US-ASCII but '=', ' ', ']', '"'; 1 to 32 of them.
_SD_ID: Final = re.compile(r"\[([!#-<>-\\^-~]{1,32})")
# PARAM-VALUE: '"', '\' and ']' only escaped (a backslash before another
# character is kept as written: it matches "\\." too).
_SD_PARAM: Final = re.compile(r" ([!#-<>-\\^-~]{1,32})=\"((?:[^\"\\\]]|\\.)*)\"", re.DOTALL)
_SD_ESCAPE: Final = re.compile(r"\\([\"\\\]])")

SdData = dict[str, dict[str, str | list[str]]]


def _add(params: dict[str, str | list[str]], name: str, value: str) -> None:
    """A parameter; a repeated name keeps every value, as a list."""
    old = params.get(name)
    if old is None:
        params[name] = value
    elif type(old) is list:
        old.append(value)
    else:
        params[name] = [old, value]  # type: ignore[list-item]


def _structured_data(text: str) -> tuple[SdData | None, str] | None:
    """``-`` or ``[id k="v"]...`` at the start of ``text`` -> (data, the rest), or ``None``."""
    if text[:1] == "-":
        if len(text) > 1 and text[1] != " ":
            return None
        return None, text[2:]
    data: SdData = {}
    position = 0
    size = len(text)
    id_match = _SD_ID.match
    param_match = _SD_PARAM.match
    while position < size and text[position] == "[":
        element = id_match(text, position)
        if element is None:
            return None
        params = data.setdefault(element.group(1), {})  # a repeated SD-ID adds to the first
        position = element.end()
        while True:
            param = param_match(text, position)
            if param is None:
                break
            value = param.group(2)
            if "\\" in value:
                value = _SD_ESCAPE.sub(r"\1", value)
            _add(params, param.group(1), value)
            position = param.end()
        if text[position : position + 1] != "]":
            return None
        position += 1
    if position == 0 or (position < size and text[position] != " "):
        return None
    return data, text[position + 1 :]


def _split_stamp(stamp: str) -> tuple[str, str] | None:
    """``2003-10-11T22:14:15.003Z`` -> (``2003-10-11T22:14:15Z``, ``003``): the
    fraction apart, so the conversion is cached per second."""
    if len(stamp) < 20 or stamp[10:11] != "T":
        return None
    rest = stamp[19:]
    fraction = ""
    if rest[:1] == ".":
        end = 1
        while end < len(rest) and "0" <= rest[end] <= "9":
            end += 1
        fraction = rest[1:end]
        rest = rest[end:]
    if rest != "Z" and not (len(rest) == 6 and rest[0] in "+-" and rest[3] == ":"):
        return None
    return stamp[:19] + rest, fraction


def _parse_iso(text: str) -> dt.datetime | None:
    """``2018-08-14T14:30:02+02:00`` or ``...+0200`` or ``...Z`` (aware)."""
    if text[-1] != "Z" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo is not None else None


def _parse_5424_time(text: str) -> dt.datetime | None:
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo is not None else None


class Rfc5424Parser:
    name: str = RFC5424
    folds: bool = False
    starts: str | None = "<"
    timestamped: bool = True
    states_level: bool = True
    continues: Continues | None = None

    def __init__(self, stamps: Timestamps) -> None:
        self._match = _HEADER.match
        self._stamps = stamps

    def parse(self, line: str, event: Event) -> Fields | None:
        match = self._match(line)
        if match is None:
            return None
        pri, _version, stamp, host, app, procid, msgid, rest = match.groups()
        number = int(pri)
        if number > 191:
            return None
        sd = _structured_data(rest or "-")
        if sd is None:
            return None
        data, message = sd
        fields: Fields = {
            "format": RFC5424,
            "syslog_facility": number >> 3,
            "syslog_severity": number & 7,
            "level": from_syslog(number & 7).name,
            "message": message.removeprefix("\ufeff"),
        }
        if stamp != "-":
            stamp_fields = _split_stamp(stamp)
            if stamp_fields is None:
                return None
            key, fraction = stamp_fields
            if key[17:19] == "60":
                # A leap second: datetime has no :60; the line keeps no time of its own.
                if self._stamps.with_offset(key[:17] + "59" + key[19:], _parse_5424_time) is None:
                    return None
            else:
                prefix = self._stamps.with_offset(key, _parse_5424_time)
                if prefix is None:
                    return None
                fields["@timestamp"] = f"{prefix}.{frac3(fraction)}Z"
        if host != "-":
            fields["host"] = host
        if app != "-":
            fields["program"] = app
        if is_number(procid, 10):
            fields["pid"] = int(procid)
        elif procid != "-":
            fields["syslog_procid"] = procid
        if msgid != "-":
            fields["syslog_msgid"] = msgid
        if data:
            fields["syslog_sd"] = data
        return fields
