"""Web servers: Apache/nginx access logs, Apache and nginx error logs.

::

    10.0.0.7 - alice [17/May/2015:10:05:03 +0000] "GET /index.html HTTP/1.1" 200 5120 "-" "curl/8"
                                                                   (apache_access, combined)
    10.0.0.7 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.0" 404 -  (apache_access, common)
    [Sun Dec 04 04:47:44 2005] [error] [client 10.0.0.7] File does not exist: /var/www/x
    [Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] [client 10.0.0.7:5678]
        AH00124: Request exceeded the limit                           (apache_error, 2.2 and 2.4)
    2016/09/01 12:00:00 [error] 1234#5678: *1 open() failed, client: 10.0.0.7   (nginx_error)

An access line's severity is its HTTP status: 5xx ERROR, 4xx WARNING, else
INFO (a line whose status is ``-`` states none). Its ``message`` is left as
the whole line; the parts go to ``client``, ``user``, ``method``, ``url``,
``http_version``, ``status``, ``bytes``, ``referrer``, ``user_agent``.
nginx's ``combined`` format is Apache's; extra fields after the user agent
are allowed and left in the message. Variants: ``vhost_combined``
(``%v:%p`` first: ``vhost``, ``vhost_port``); an ``X-Forwarded-For`` list
in place of the client (``203.0.113.9, 10.0.0.1 - - [...]``: ``client`` is
its first address, ``forwarded_for`` the whole list); IPv6 clients. Error logs give their level word
(Apache's ``trace1``..``trace8`` are TRACE), the module as ``logger``, the
process and thread, the client and Apache's ``AH01234`` code (``error_code``).
Times without a zone (error logs) are read in the configured zone.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from logstream.event import Event
from logstream.parsers.common import (
    DIGITS,
    MONTHS,
    NOT_SPACE,
    Continues,
    Fields,
    LevelMap,
    Timestamps,
    compiled,
    frac3,
    set_level,
)
from logstream.severity import Severity, from_http_status

ACCESS: Final = "apache_access"
APACHE_ERROR: Final = "apache_error"
NGINX_ERROR: Final = "nginx_error"

# "...", backslash escapes allowed (written unrolled: no alternation per character).
_QUOTED: Final = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_ACCESS: Final = re.compile(
    r"(?:([^\s,:\[\]\"]++):(\d{1,5}) )?(\S+(?:, \S+)*) (\S+) (\S+) "
    r"\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d) ([+-]\d{4})\] "
    + _QUOTED
    + r" (\d{3}|-) (\d{1,18}|-)(?: "
    + _QUOTED
    + " "
    + _QUOTED
    + r")?(.*)\Z",
    re.DOTALL | re.ASCII,
)
_STATUS_LEVELS: Final = {code: from_http_status(code).name for code in range(100, 1000)}
# The common line, without running _ACCESS's character classes over the quoted
# parts (most of a line): the head up to the request's quote, then str.find for
# each closing quote. Taken only where _ACCESS would read the line the same way
# (see AccessParser.parse); anything else goes to _ACCESS.
_HEAD: Final = re.compile(
    r"(\S+) (\S+) (\S+) \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] \"", re.ASCII
)
_STATUS_SIZE: Final = re.compile(r'" (\d{3}|-) (\d{1,18}|-)', re.ASCII)
# The commonest line of all, in one match: a client that is one address (no
# "vhost:port", no X-Forwarded-For list), and -- checked before -- no backslash
# anywhere in the line. Where it matches, the _HEAD path below reads the line
# the same way (its quotes end at the first '"'); elsewhere that path runs.
_PLAIN: Final = re.compile(
    r"([^\s:,]+) \S+ (\S+) \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    r'"([^"]*)" (\d{3}|-) (\d{1,18}|-)(?: "([^"]*)" "([^"]*)")?',
    re.ASCII,
)


def _access_time(key: str) -> dt.datetime | None:
    # "17/May/2015:10:05:03 +0000"
    month = MONTHS.get(key[3:6])
    if month is None:
        return None
    offset = int(key[22:24]) * 60 + int(key[24:26])
    if key[21] == "-":
        offset = -offset
    zone = dt.timezone(dt.timedelta(minutes=offset))
    return dt.datetime(
        int(key[7:11]),
        month,
        int(key[0:2]),
        int(key[12:14]),
        int(key[15:17]),
        int(key[18:20]),
        tzinfo=zone,
    )


class AccessParser:
    name: str = ACCESS
    folds: bool = False
    starts: str | None = NOT_SPACE
    timestamped: bool = True
    states_level: bool = False  # a status of '-' states none
    continues: Continues | None = None

    def __init__(self, stamps: Timestamps) -> None:
        self._match = _ACCESS.match
        self._head = _HEAD.match
        self._plain = _PLAIN.match
        self._status_size = _STATUS_SIZE.match
        self._stamps = stamps
        self._known_stamps = stamps.known_offset
        fast = compiled("_web_fast")
        if fast is not None:  # the same reading, the common line without the regexes
            self.parse = fast.Access(  # type: ignore[method-assign]
                ACCESS,
                self._known_stamps,
                stamps.with_offset,
                _access_time,
                _STATUS_LEVELS,
                Severity.INFO.name,
                self._general,
            ).parse

    def parse(self, line: str, event: Event) -> Fields | None:
        if "\\" not in line:
            plain = self._plain(line)
            if plain is not None:
                # _fields, inline, for a client without "," and no vhost.
                client, user, when, request, status, size, referrer, agent = plain.groups()
                prefix = self._known_stamps.get(when) or self._stamps.with_offset(
                    when, _access_time
                )
                if prefix is None:
                    return None
                fields: Fields = {
                    "@timestamp": f"{prefix}.000Z",
                    "format": ACCESS,
                    "client": client,
                }
                if user != "-":
                    fields["user"] = user
                method, space, target = request.partition(" ")
                if space:
                    url, space, version = target.rpartition(" ")
                    fields["method"] = method
                    if space and version.startswith("HTTP/"):
                        fields["url"] = url
                        fields["http_version"] = version[5:]
                    else:
                        fields["url"] = target
                elif request and request != "-":
                    fields["url"] = request
                if status != "-":
                    code = int(status)
                    fields["status"] = code
                    fields["level"] = _STATUS_LEVELS[code] if code >= 100 else Severity.INFO.name
                if size != "-":
                    fields["bytes"] = int(size)
                if referrer is not None and referrer != "-":
                    fields["referrer"] = referrer
                if agent is not None and agent != "-":
                    fields["user_agent"] = agent
                return fields
        return self._general(line)

    def _general(self, line: str) -> Fields | None:
        """Any access line (``parse`` takes the plain one itself, the same way)."""
        head = self._head(line)
        if head is not None:
            client, _ident, user, when = head.groups()
            # _ACCESS would read the line otherwise when the first word may be
            # "vhost:port" or start an X-Forwarded-For list; its quoted parts skip
            # backslash escapes (the str.find below does not).
            if ":" not in client and client[-1] != ",":
                at = head.end()
                end = line.find('"', at)
                if end > 0 and "\\" not in line[at:end]:
                    tail = self._status_size(line, end)
                    if tail is None:
                        return None  # _ACCESS cannot match either: its head is the same
                    status, size = tail.groups()
                    referrer = agent = None
                    at = tail.end()
                    if line[at : at + 2] == ' "':
                        if "\\" in line[at:]:
                            return self._slow(line)
                        ref_end = line.find('"', at + 2)
                        if ref_end > 0 and line[ref_end : ref_end + 3] == '" "':
                            agent_end = line.find('"', ref_end + 3)
                            if agent_end > 0:
                                referrer = line[at + 2 : ref_end]
                                agent = line[ref_end + 3 : agent_end]
                    request = line[head.end() : end]
                    return self._fields(
                        None, None, client, user, when, request, status, size, referrer, agent
                    )
        if " [" not in line:
            return None
        return self._slow(line)

    def _slow(self, line: str) -> Fields | None:
        match = self._match(line)
        if match is None:
            return None
        (vhost, port, client, _ident, user, stamp, zone, request, status, size) = match.groups()[
            :10
        ]
        referrer, agent = match.group(11), match.group(12)
        return self._fields(
            vhost, port, client, user, f"{stamp} {zone}", request, status, size, referrer, agent
        )

    def _fields(
        self,
        vhost: str | None,
        port: str | None,
        client: str,
        user: str,
        when: str,
        request: str,
        status: str,
        size: str,
        referrer: str | None,
        agent: str | None,
    ) -> Fields | None:
        prefix = self._known_stamps.get(when) or self._stamps.with_offset(when, _access_time)
        if prefix is None:
            return None
        fields: Fields = {"@timestamp": f"{prefix}.000Z", "format": ACCESS}
        if vhost is not None:
            fields["vhost"] = vhost
            fields["vhost_port"] = int(port or 0)
        if "," in client:  # $http_x_forwarded_for first: the client, then the proxies
            addresses = [part.strip() for part in client.split(",") if part.strip()]
            fields["client"] = addresses[0] if addresses else client
            fields["forwarded_for"] = addresses
        else:
            fields["client"] = client
        if user != "-":
            fields["user"] = user
        method, space, target = request.partition(" ")
        if space:
            url, space, version = target.rpartition(" ")
            if space and version.startswith("HTTP/"):
                fields["method"] = method
                fields["url"] = url
                fields["http_version"] = version[5:]
            else:
                fields["method"] = method
                fields["url"] = target
        elif request and request != "-":
            fields["url"] = request
        if status != "-":
            code = int(status)
            fields["status"] = code
            fields["level"] = _STATUS_LEVELS[code] if code >= 100 else Severity.INFO.name
        if size != "-":
            fields["bytes"] = int(size)
        if referrer is not None and referrer != "-":
            fields["referrer"] = referrer
        if agent is not None and agent != "-":
            fields["user_agent"] = agent
        return fields


# --------------------------------------------------------------------------- error logs

# Apache 2.2: "[%t] [%l] [client %a] %M"; 2.4's default ErrorLogFormat:
# "[%{u}t] [%-m:%l] [pid %P:tid %T] %7F: %E: [client\ %a] %M% ,\ referer\ %{Referer}i"
# (the module may be empty: "[:error]"; %F, the source file, only at debug
# levels; %E, the APR error, only when there is one: "(13)Permission denied: ").
_APACHE_ERROR: Final = re.compile(
    r"\[(\w{3} (\w{3}) ([ \d]?\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,9}))? (\d{4}))\] "
    r"\[(?:([\w.-]{0,64}):)?([a-z]{1,8}\d?)\] "
    r"(?:\[pid (\d{1,10})(?::tid (\d{1,20}))?\] )?"
    r"(?:([\w.-]{1,64}\.[ch])\((\d{1,9})\): )?"
    r"(?:(\(-?\d{1,9}\)[^:\[\]]{0,200}): )?"
    r"(?:\[client ([^\]]{1,300})\] )?"
    r"(?:(AH\d{5}): )?(.*)\Z",
    re.DOTALL | re.ASCII,
)
_NGINX_ERROR: Final = re.compile(
    r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[([a-z]{1,8})\] (\d{1,10})#(\d{1,20}): (.*)\Z",
    re.DOTALL | re.ASCII,
)
_ERROR_LEVELS: Final = {f"trace{n}": Severity.TRACE for n in range(1, 9)}


def _error_levels() -> LevelMap:
    return LevelMap({word.upper(): severity for word, severity in _ERROR_LEVELS.items()})


class ApacheErrorParser:
    name: str = APACHE_ERROR
    folds: bool = False
    starts: str | None = "["
    timestamped: bool = True
    states_level: bool = True
    continues: Continues | None = None

    def __init__(self, stamps: Timestamps) -> None:
        self._match = _APACHE_ERROR.match
        self._stamps = stamps
        self._levels = _error_levels()
        fast = compiled("_web_fast")
        if fast is not None:  # the same reading, without the regex
            self.parse = fast.ApacheError(  # type: ignore[method-assign]
                APACHE_ERROR,
                self._levels.known,
                self._levels.get,
                MONTHS,
                stamps.known_local,
                stamps.local,
            ).parse

    def parse(self, line: str, event: Event) -> Fields | None:
        if line[:1] != "[":
            return None
        match = self._match(line)
        if match is None:
            return None
        (_, month, day, clock, fraction, year, module, word, pid, tid) = match.groups()[:10]
        source, source_line, apr, client, code, message = match.groups()[10:]
        info = self._levels.get(word)
        number = MONTHS.get(month)
        if info is None or number is None:
            return None
        prefix = self._stamps.local(f"{year}-{number:02d}-{int(day):02d} {clock}")
        if prefix is None:
            return None
        fields: Fields = {
            "@timestamp": f"{prefix}.{frac3(fraction)}Z",
            "format": APACHE_ERROR,
            "message": message,
        }
        set_level(fields, info)
        if module:
            fields["logger"] = module
        if pid is not None:
            fields["pid"] = int(pid)
        if tid is not None:
            fields["thread_id"] = int(tid)
        if client is not None:
            fields["client"] = client
        if code is not None:
            fields["error_code"] = code
        if apr is not None:
            fields["error_message"] = apr
        if source is not None:
            fields["file"] = source
            fields["line"] = int(source_line)
        if ", referer" in message:
            text, _, referrer = message.rpartition(", referer")
            referrer = referrer.removeprefix(":").strip()
            if referrer and " " not in referrer:
                fields["message"] = text
                fields["referrer"] = referrer
        return fields


class NginxErrorParser:
    name: str = NGINX_ERROR
    folds: bool = False
    starts: str | None = DIGITS
    timestamped: bool = True
    states_level: bool = True
    continues: Continues | None = None

    def __init__(self, stamps: Timestamps) -> None:
        self._match = _NGINX_ERROR.match
        self._stamps = stamps
        self._levels = LevelMap()
        fast = compiled("_web_fast")
        if fast is not None:  # the same reading, without the regex
            self.parse = fast.NginxError(  # type: ignore[method-assign]
                NGINX_ERROR, self._levels.known, self._levels.get, stamps.known_local, stamps.local
            ).parse

    def parse(self, line: str, event: Event) -> Fields | None:
        match = self._match(line)
        if match is None:
            return None
        stamp, word, pid, tid, message = match.groups()
        info = self._levels.get(word)
        if info is None:
            return None
        prefix = self._stamps.local(stamp)
        if prefix is None:
            return None
        fields: Fields = {
            "@timestamp": f"{prefix}.000Z",
            "format": NGINX_ERROR,
            "pid": int(pid),
            "thread_id": int(tid),
        }
        set_level(fields, info)
        client = message.rfind(", client: ")
        if client > 0:
            end = message.find(",", client + 10)
            fields["client"] = message[client + 10 : end if end > 0 else None]
        fields["message"] = message
        return fields
