# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled fast paths of the web parsers (built by scripts/bootstrap with Cython).

``Access.parse`` reads a line exactly as ``web.AccessParser.parse`` does,
without Python's regex engine: the commonest lines in one left-to-right scan
over the line's characters -- what ``web._PLAIN`` matches in a line without
a backslash, and the same shape with colons in the client (IPv6, or
``host:port``), which Python reads with ``_ACCESS`` the same way (see
``Access.parse``). Every other line that could be an access line (vhost,
X-Forwarded-For lists, backslash escapes) goes to the Python parser's
``_general``; a line that cannot be one (no `` [dd/Mon/yyyy:hh:mm:ss +zzzz]
"`` in it, which both of ``_general``'s regexes require) is refused here.
``NginxError`` and ``ApacheError`` stand in for the error-log parsers' regexes.
The Python parsers stay the reference: ``tests/test_speedups_web.py`` runs
generated lines, edits of them, random text and the corpus through both and
compares the fields.
"""

from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_READ_CHAR

from logstream.parsers._scan cimport _digit, _digits_from, _digits_value, _space, _word, _stamp19


cdef inline bint _stamp_at(str line, Py_ssize_t i, Py_ssize_t n) noexcept:
    """``dd/Mon/yyyy:hh:mm:ss [+-]zzzz] "`` (29 characters) at ``i``."""
    cdef Py_ssize_t k
    cdef Py_UCS4 c
    if i < 0 or i + 29 > n:
        return False
    for k in range(26):
        c = PyUnicode_READ_CHAR(line, i + k)
        if k == 2 or k == 6:
            if c != 47:  # /
                return False
        elif k == 3:
            if not 65 <= c <= 90:  # [A-Z]
                return False
        elif k == 4 or k == 5:
            if not 97 <= c <= 122:  # [a-z]
                return False
        elif k == 11 or k == 14 or k == 17:
            if c != 58:  # :
                return False
        elif k == 20:
            if c != 32:
                return False
        elif k == 21:
            if c != 43 and c != 45:  # + -
                return False
        elif not _digit(c):
            return False
    return (
        PyUnicode_READ_CHAR(line, i + 26) == 93  # ]
        and PyUnicode_READ_CHAR(line, i + 27) == 32
        and PyUnicode_READ_CHAR(line, i + 28) == 34  # "
    )


cdef bint _may_be_access(str line, Py_ssize_t n) except -1:
    """Whether `` [<stamp>] "`` is in ``line``: without it no access regex matches."""
    cdef Py_ssize_t at = line.find(" [")
    while at >= 0:
        if _stamp_at(line, at + 2, n):
            return True
        at = line.find(" [", at + 1)
    return False


cdef class Access:
    """``web.AccessParser.parse`` without the regexes (same fields, same ``None``)."""

    cdef str _name
    cdef dict _known_stamps
    cdef object _with_offset
    cdef object _access_time
    cdef dict _status_levels
    cdef str _info
    cdef object _general
    cdef object _last_when  # str or None
    cdef object _last_stamp

    def __init__(
        self,
        str name,
        dict known_stamps,
        with_offset,
        access_time,
        dict status_levels,
        str info,
        general,
    ):
        self._name = name
        self._known_stamps = known_stamps
        self._with_offset = with_offset
        self._access_time = access_time
        self._status_levels = status_levels
        self._info = info
        self._general = general
        self._last_when = None
        self._last_stamp = None

    def parse(self, str line, event):
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(line)
        cdef Py_ssize_t i, k, end, ref_end, agent_end, client_end, user_at, user_end
        cdef Py_ssize_t status_at = -1, size_digits = 0, words, ident_end
        cdef long long size = 0
        cdef int code
        cdef Py_UCS4 c
        cdef Py_ssize_t when_at, request_at, request_end, space, last
        cdef str when, client
        cdef list addresses
        cdef object prefix, stamp, referrer = None, agent = None
        cdef dict fields
        if "\\" in line:
            return self._general_or_none(line, n)
        # The words before the first one that starts with "[" (which must be the
        # time): at least three, separated by one space each, the last two the
        # ident and the user, the ones before them the client. Where that is one
        # word without "," or ":", _PLAIN reads the line. Elsewhere (colons:
        # IPv6, host:port; commas: an X-Forwarded-For list) _PLAIN fails, and
        # _general reads the line with _HEAD (one client word without ":" that
        # does not end in ",") or else _ACCESS, the same way, provided every
        # client word but the last is "<one or more characters>,". _ACCESS's
        # client group `\S+(?:, \S+)*` takes its first \S+ longest first: it
        # tries clients of 1, 2, 3... words in turn. Shorter clients than this
        # one fail (no word before the time starts with "["); longer ones are
        # tried only when the rest of the line fails here, and then this scan
        # gives the line to _general. _ACCESS's vhost group ("V:P " first)
        # cannot match: the first word would end in a digit (not in ","), and
        # the time would have to follow four words. Without a backslash in the
        # line, the quoted parts of all three regexes end at the next '"'.
        words = 0
        client_end = ident_end = user_end = -1
        i = 0
        while True:
            if i >= n:
                return self._general_or_none(line, n)
            c = PyUnicode_READ_CHAR(line, i)
            if c == 91:  # [
                break
            if _space(c):
                return self._general_or_none(line, n)
            k = i + 1
            while k < n and not _space(PyUnicode_READ_CHAR(line, k)):
                k += 1
            if k >= n or PyUnicode_READ_CHAR(line, k) != 32:
                return self._general_or_none(line, n)
            if words >= 3 and not (
                PyUnicode_READ_CHAR(line, client_end - 1) == 44  # ,
                and client_end >= 2
                and PyUnicode_READ_CHAR(line, client_end - 2) != 32
            ):
                # A client word but the last that is not "<something>,": ", "
                # takes its comma, and \S+ needs a character before it.
                return self._general_or_none(line, n)
            client_end = ident_end
            ident_end = user_end
            user_end = k
            words += 1
            i = k + 1
        if words < 3:
            return self._general_or_none(line, n)
        user_at = ident_end + 1
        k = user_end
        # (dd/Mon/yyyy:hh:mm:ss [+-]zzzz)\] "
        i = k + 2
        if not _stamp_at(line, i, n):
            return self._general_or_none(line, n)
        when_at = i
        i += 29
        # ([^"]*)" then a space
        end = line.find('"', i)
        if end < 0 or end + 1 >= n or PyUnicode_READ_CHAR(line, end + 1) != 32:
            return self._general_or_none(line, n)
        request_at = i
        request_end = end
        i = end + 2
        # (\d{3}|-) then a space
        if (
            i + 3 < n
            and _digit(PyUnicode_READ_CHAR(line, i))
            and _digit(PyUnicode_READ_CHAR(line, i + 1))
            and _digit(PyUnicode_READ_CHAR(line, i + 2))
            and PyUnicode_READ_CHAR(line, i + 3) == 32
        ):
            status_at = i
            i += 4
        elif i + 1 < n and PyUnicode_READ_CHAR(line, i) == 45 and PyUnicode_READ_CHAR(line, i + 1) == 32:
            i += 2
        else:
            return self._general_or_none(line, n)
        # (\d{1,18}|-): the longest run of up to 18 digits (nothing must follow)
        if i < n and _digit(PyUnicode_READ_CHAR(line, i)):
            while i < n and size_digits < 18:
                c = PyUnicode_READ_CHAR(line, i)
                if not _digit(c):
                    break
                size = size * 10 + (<int>c - 48)
                size_digits += 1
                i += 1
        elif i < n and PyUnicode_READ_CHAR(line, i) == 45:
            i += 1
        else:
            return self._general_or_none(line, n)
        # (?: "([^"]*)" "([^"]*)")?
        if i + 1 < n and PyUnicode_READ_CHAR(line, i) == 32 and PyUnicode_READ_CHAR(line, i + 1) == 34:
            ref_end = line.find('"', i + 2)
            if (
                ref_end >= 0
                and ref_end + 2 < n
                and PyUnicode_READ_CHAR(line, ref_end + 1) == 32
                and PyUnicode_READ_CHAR(line, ref_end + 2) == 34
            ):
                agent_end = line.find('"', ref_end + 3)
                if agent_end >= 0:
                    referrer = line[i + 2 : ref_end]
                    agent = line[ref_end + 3 : agent_end]
        # The fields, as AccessParser.parse builds them. The time: the last
        # line's again (a pure function of the 26 characters), else looked up.
        if self._last_when is not None and line.startswith(<str>self._last_when, when_at):
            stamp = self._last_stamp
        else:
            when = line[when_at : when_at + 26]
            prefix = self._known_stamps.get(when)
            if prefix is None:
                prefix = self._with_offset(when, self._access_time)
                if prefix is None:
                    return None
            stamp = f"{prefix}.000Z"
            self._last_when = when
            self._last_stamp = stamp
        client = line[0:client_end]
        if line.find(",", 0, client_end) < 0:
            fields = {"@timestamp": stamp, "format": self._name, "client": client}
        else:  # as AccessParser._fields: the client, then the proxies
            addresses = [part.strip() for part in client.split(",") if part.strip()]
            fields = {
                "@timestamp": stamp,
                "format": self._name,
                "client": addresses[0] if addresses else client,
                "forwarded_for": addresses,
            }
        if not (user_end - user_at == 1 and PyUnicode_READ_CHAR(line, user_at) == 45):
            fields["user"] = line[user_at:user_end]
        # request.partition(" "), then target.rpartition(" ") and "HTTP/": in offsets
        space = line.find(" ", request_at, request_end)
        if space >= 0:
            fields["method"] = line[request_at:space]
            last = line.rfind(" ", space + 1, request_end)
            if last >= 0 and line.startswith("HTTP/", last + 1, request_end):
                fields["url"] = line[space + 1 : last]
                fields["http_version"] = line[last + 6 : request_end]
            else:
                fields["url"] = line[space + 1 : request_end]
        elif request_end > request_at and not (
            request_end - request_at == 1 and PyUnicode_READ_CHAR(line, request_at) == 45
        ):
            fields["url"] = line[request_at:request_end]
        if status_at >= 0:
            code = (
                (<int>PyUnicode_READ_CHAR(line, status_at) - 48) * 100
                + (<int>PyUnicode_READ_CHAR(line, status_at + 1) - 48) * 10
                + (<int>PyUnicode_READ_CHAR(line, status_at + 2) - 48)
            )
            fields["status"] = code
            fields["level"] = self._status_levels[code] if code >= 100 else self._info
        if size_digits:
            fields["bytes"] = size
        if referrer is not None and referrer != "-":
            fields["referrer"] = referrer
        if agent is not None and agent != "-":
            fields["user_agent"] = agent
        return fields

    cdef object _general_or_none(self, str line, Py_ssize_t n):
        if not _may_be_access(line, n):
            return None
        return self._general(line)


cdef class NginxError:
    """``web.NginxErrorParser.parse`` without the regex (same fields, same ``None``)."""

    cdef str _name
    cdef dict _known_levels
    cdef object _levels_get
    cdef dict _known_stamps
    cdef object _stamps_local

    def __init__(self, str name, dict known_levels, levels_get, dict known_stamps, stamps_local):
        self._name = name
        self._known_levels = known_levels
        self._levels_get = levels_get
        self._known_stamps = known_stamps
        self._stamps_local = stamps_local

    def parse(self, str line, event):
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(line)
        cdef Py_ssize_t i, k, pid_at, pid_end, tid_at, tid_end, client, end
        cdef Py_UCS4 c
        cdef long long pid = 0
        cdef str stamp, word, message
        cdef object info, prefix
        cdef dict fields
        if n < 29:  # stamp (19) " [" a "] " 1 "#" 1 ": "
            return None
        # (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[
        if not _stamp19(line, 47):  # /
            return None
        if PyUnicode_READ_CHAR(line, 19) != 32 or PyUnicode_READ_CHAR(line, 20) != 91:
            return None
        # ([a-z]{1,8})\] then a space
        k = 21
        while k < n and k - 21 <= 8 and 97 <= PyUnicode_READ_CHAR(line, k) <= 122:
            k += 1
        if k == 21 or k - 21 > 8 or k + 1 >= n:
            return None
        if PyUnicode_READ_CHAR(line, k) != 93 or PyUnicode_READ_CHAR(line, k + 1) != 32:
            return None
        word = line[21:k]
        # (\d{1,10})#
        pid_at = k + 2
        k = _digits_from(line, pid_at, n, 10)
        pid_end = pid_at + k
        if k == 0 or k > 10 or pid_end >= n or PyUnicode_READ_CHAR(line, pid_end) != 35:  # #
            return None
        # (\d{1,20}): then a space, then (.*)\Z
        tid_at = pid_end + 1
        k = _digits_from(line, tid_at, n, 20)
        tid_end = tid_at + k
        if k == 0 or k > 20 or tid_end + 1 >= n:
            return None
        if PyUnicode_READ_CHAR(line, tid_end) != 58 or PyUnicode_READ_CHAR(line, tid_end + 1) != 32:
            return None
        info = self._known_levels.get(word)
        if info is None:
            info = self._levels_get(word)
            if info is None:
                return None
        stamp = line[0:19]
        prefix = self._known_stamps.get(stamp)
        if prefix is None:
            prefix = self._stamps_local(stamp)
            if prefix is None:
                return None
        for i in range(pid_at, pid_end):
            pid = pid * 10 + (<int>PyUnicode_READ_CHAR(line, i) - 48)
        fields = {
            "@timestamp": f"{prefix}.000Z",
            "format": self._name,
            "pid": pid,
            "thread_id": int(line[tid_at:tid_end]),
            "level": (<tuple>info)[0],
        }
        if (<tuple>info)[1] is not None:
            fields["level_original"] = (<tuple>info)[1]
        message = line[tid_end + 2 :]
        client = message.rfind(", client: ")
        if client > 0:
            end = message.find(",", client + 10)
            fields["client"] = message[client + 10 : end if end > 0 else PyUnicode_GET_LENGTH(message)]
        fields["message"] = message
        return fields


cdef class ApacheError:
    """``web.ApacheErrorParser.parse`` without the regex (same fields, same ``None``)."""

    cdef str _name
    cdef dict _known_levels
    cdef object _levels_get
    cdef dict _months
    cdef dict _known_stamps
    cdef object _stamps_local

    def __init__(
        self, str name, dict known_levels, levels_get, dict months, dict known_stamps, stamps_local
    ):
        self._name = name
        self._known_levels = known_levels
        self._levels_get = levels_get
        self._months = months
        self._known_stamps = known_stamps
        self._stamps_local = stamps_local

    def parse(self, str line, event):
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(line)
        cdef Py_ssize_t i, k, day_at, day_end, clock_at, frac_at = -1, frac_end = -1, year_at
        cdef Py_ssize_t module_at = -1, module_end = -1, word_at, word_end
        cdef Py_ssize_t pid_at = -1, pid_end = -1, tid_at = -1, tid_end = -1
        cdef Py_ssize_t source_at = -1, source_end = -1, source_line_at = -1, source_line_end = -1
        cdef Py_ssize_t apr_at = -1, apr_end = -1, client_at = -1, client_end = -1, code_at = -1
        cdef Py_ssize_t m, run_at, day
        cdef Py_UCS4 c
        cdef str word, stamp, fraction, message, text, referrer
        cdef object info, number, prefix
        cdef dict fields
        if n < 30 or PyUnicode_READ_CHAR(line, 0) != 91:  # [
            return None
        # \[(\w{3} (\w{3}) ([ \d]?\d) (\d\d:\d\d:\d\d)(?:\.(\d{1,9}))? (\d{4}))\] then a space
        for i in range(1, 8):
            c = PyUnicode_READ_CHAR(line, i)
            if i == 4:
                if c != 32:
                    return None
            elif not _word(c):
                return None
        if PyUnicode_READ_CHAR(line, 8) != 32:
            return None
        day_at = 9
        c = PyUnicode_READ_CHAR(line, 9)
        if (
            (c == 32 or _digit(c))
            and _digit(PyUnicode_READ_CHAR(line, 10))
            and PyUnicode_READ_CHAR(line, 11) == 32
        ):
            day_end = 11
        elif _digit(c) and PyUnicode_READ_CHAR(line, 10) == 32:
            day_end = 10
        else:
            return None
        clock_at = day_end + 1
        if clock_at + 8 > n:
            return None
        for k in range(8):
            c = PyUnicode_READ_CHAR(line, clock_at + k)
            if k == 2 or k == 5:
                if c != 58:  # :
                    return None
            elif not _digit(c):
                return None
        i = clock_at + 8
        if i < n and PyUnicode_READ_CHAR(line, i) == 46:  # .
            k = _digits_from(line, i + 1, n, 9)
            if k == 0 or k > 9:
                return None
            frac_at = i + 1
            frac_end = frac_at + k
            i = frac_end
        # " dddd] ["
        if i + 8 > n or PyUnicode_READ_CHAR(line, i) != 32:
            return None
        year_at = i + 1
        for k in range(year_at, year_at + 4):
            if not _digit(PyUnicode_READ_CHAR(line, k)):
                return None
        i = year_at + 4
        if (
            PyUnicode_READ_CHAR(line, i) != 93
            or PyUnicode_READ_CHAR(line, i + 1) != 32
            or PyUnicode_READ_CHAR(line, i + 2) != 91
        ):
            return None
        # (?:([\w.-]{0,64}):)?([a-z]{1,8}\d?)\] then a space
        i += 3
        k = i
        while k < n and k - i <= 64:
            c = PyUnicode_READ_CHAR(line, k)
            if not (_word(c) or c == 46 or c == 45):  # . -
                break
            k += 1
        if k - i <= 64 and k < n and PyUnicode_READ_CHAR(line, k) == 58:
            module_at = i
            module_end = k
            i = k + 1
        word_at = i
        k = i
        while k < n and k - i <= 8 and 97 <= PyUnicode_READ_CHAR(line, k) <= 122:
            k += 1
        if k == i or k - i > 8 or k + 1 >= n:
            return None
        if _digit(PyUnicode_READ_CHAR(line, k)):
            k += 1
            if k + 1 >= n:
                return None
        if PyUnicode_READ_CHAR(line, k) != 93 or PyUnicode_READ_CHAR(line, k + 1) != 32:
            return None
        word_end = k
        i = k + 2
        # (?:\[pid (\d{1,10})(?::tid (\d{1,20}))?\] )?
        if line.startswith("[pid ", i):
            k = _digits_from(line, i + 5, n, 10)
            if 0 < k <= 10:
                pid_at = i + 5
                pid_end = pid_at + k
                if line.startswith(":tid ", pid_end):
                    k = _digits_from(line, pid_end + 5, n, 20)
                    if 0 < k <= 20 and line.startswith("] ", pid_end + 5 + k):
                        tid_at = pid_end + 5
                        tid_end = tid_at + k
                        i = tid_end + 2
                    else:
                        pid_at = -1
                elif line.startswith("] ", pid_end):
                    i = pid_end + 2
                else:
                    pid_at = -1
        # (?:([\w.-]{1,64}\.[ch])\((\d{1,9})\): )?
        k = i
        while k < n and k - i <= 66:
            c = PyUnicode_READ_CHAR(line, k)
            if not (_word(c) or c == 46 or c == 45):
                break
            k += 1
        if (
            3 <= k - i <= 66
            and k < n
            and PyUnicode_READ_CHAR(line, k) == 40  # (
            and PyUnicode_READ_CHAR(line, k - 2) == 46  # .
            and (PyUnicode_READ_CHAR(line, k - 1) == 99 or PyUnicode_READ_CHAR(line, k - 1) == 104)
        ):
            source_end = k
            m = _digits_from(line, k + 1, n, 9)
            if 0 < m <= 9 and line.startswith("): ", k + 1 + m):
                source_at = i
                source_line_at = k + 1
                source_line_end = k + 1 + m
                i = source_line_end + 3
        # (?:(\(-?\d{1,9}\)[^:\[\]]{0,200}): )?
        if i < n and PyUnicode_READ_CHAR(line, i) == 40:
            k = i + 1
            if k < n and PyUnicode_READ_CHAR(line, k) == 45:
                k += 1
            m = _digits_from(line, k, n, 9)
            if 0 < m <= 9 and k + m < n and PyUnicode_READ_CHAR(line, k + m) == 41:  # )
                k += m + 1
                run_at = k
                while k < n and k - run_at <= 200:
                    c = PyUnicode_READ_CHAR(line, k)
                    if c == 58 or c == 91 or c == 93:  # : [ ]
                        break
                    k += 1
                if k - run_at <= 200 and line.startswith(": ", k):
                    apr_at = i
                    apr_end = k
                    i = k + 2
        # (?:\[client ([^\]]{1,300})\] )?
        if line.startswith("[client ", i):
            k = i + 8
            while k < n and k - (i + 8) <= 300 and PyUnicode_READ_CHAR(line, k) != 93:
                k += 1
            if 0 < k - (i + 8) <= 300 and line.startswith("] ", k):
                client_at = i + 8
                client_end = k
                i = k + 2
        # (?:(AH\d{5}): )?
        if (
            line.startswith("AH", i)
            and _digits_from(line, i + 2, n, 5) == 5
            and line.startswith(": ", i + 7)
        ):
            code_at = i
            i += 9
        message = line[i:]
        word = line[word_at:word_end]
        info = self._known_levels.get(word)
        if info is None:
            info = self._levels_get(word)
        number = self._months.get(line[5:8])
        if info is None or number is None:
            return None
        day = _digits_value(line, day_end - 1, day_end)
        if day_end - day_at == 2 and PyUnicode_READ_CHAR(line, day_at) != 32:
            day += 10 * _digits_value(line, day_at, day_at + 1)
        stamp = f"{line[year_at : year_at + 4]}-{number:02d}-{day:02d} {line[clock_at : clock_at + 8]}"
        prefix = self._known_stamps.get(stamp)
        if prefix is None:
            prefix = self._stamps_local(stamp)
            if prefix is None:
                return None
        if frac_at < 0:
            fraction = "000"
        elif frac_end - frac_at >= 3:
            fraction = line[frac_at : frac_at + 3]
        else:
            fraction = (line[frac_at:frac_end] + "00")[:3]
        fields = {
            "@timestamp": f"{prefix}.{fraction}Z",
            "format": self._name,
            "message": message,
            "level": (<tuple>info)[0],
        }
        if (<tuple>info)[1] is not None:
            fields["level_original"] = (<tuple>info)[1]
        if module_end > module_at:
            fields["logger"] = line[module_at:module_end]
        if pid_at >= 0:
            fields["pid"] = _digits_value(line, pid_at, pid_end)
        if tid_at >= 0:
            fields["thread_id"] = int(line[tid_at:tid_end])
        if client_at >= 0:
            fields["client"] = line[client_at:client_end]
        if code_at >= 0:
            fields["error_code"] = line[code_at : code_at + 7]
        if apr_at >= 0:
            fields["error_message"] = line[apr_at:apr_end]
        if source_at >= 0:
            fields["file"] = line[source_at:source_end]
            fields["line"] = _digits_value(line, source_line_at, source_line_end)
        if ", referer" in message:
            text, _, referrer = message.rpartition(", referer")
            referrer = referrer.removeprefix(":").strip()
            if referrer and " " not in referrer:
                fields["message"] = text
                fields["referrer"] = referrer
        return fields
