# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled fast path of the web access parser (built by scripts/bootstrap with Cython).

``Access.parse`` reads a line exactly as ``web.AccessParser.parse`` does,
without Python's regex engine: the commonest line (what ``web._PLAIN``
matches in a line without a backslash) in one left-to-right scan over the
line's characters. Every other line that could be an access line (vhost,
X-Forwarded-For lists, IPv6 clients, backslash escapes) goes to the Python
parser's ``_general``; a line that cannot be one (no `` [dd/Mon/yyyy:hh:mm:ss
+zzzz] "`` in it, which both of ``_general``'s regexes require) is refused
here. The Python parser stays the reference: ``tests/test_speedups_web.py``
runs generated lines, edits of them, random text and the corpus through both
and compares the fields.
"""

from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_READ_CHAR


cdef inline bint _digit(Py_UCS4 c) noexcept:
    return 48 <= c <= 57


cdef inline bint _space(Py_UCS4 c) noexcept:
    # \s of re.ASCII: space, \t \n \v \f \r
    return c == 32 or 9 <= c <= 13


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
        cdef Py_ssize_t status_at = -1, size_digits = 0
        cdef long long size = 0
        cdef int code
        cdef Py_UCS4 c
        cdef Py_ssize_t when_at, request_at, request_end, space, last
        cdef str when
        cdef object prefix, stamp, referrer = None, agent = None
        cdef dict fields
        if "\\" in line:
            return self._general_or_none(line, n)
        # ([^\s:,]+) then a space
        i = 0
        while i < n:
            c = PyUnicode_READ_CHAR(line, i)
            if _space(c) or c == 58 or c == 44:  # : ,
                break
            i += 1
        if i == 0 or i >= n or PyUnicode_READ_CHAR(line, i) != 32:
            return self._general_or_none(line, n)
        client_end = i
        # \S+ (the ident) then a space
        k = i + 1
        while k < n and not _space(PyUnicode_READ_CHAR(line, k)):
            k += 1
        if k == i + 1 or k >= n or PyUnicode_READ_CHAR(line, k) != 32:
            return self._general_or_none(line, n)
        # (\S+) (the user) then " ["
        user_at = k + 1
        k = user_at
        while k < n and not _space(PyUnicode_READ_CHAR(line, k)):
            k += 1
        if k == user_at or k + 1 >= n or PyUnicode_READ_CHAR(line, k) != 32:
            return self._general_or_none(line, n)
        if PyUnicode_READ_CHAR(line, k + 1) != 91:  # [
            return self._general_or_none(line, n)
        user_end = k
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
        fields = {"@timestamp": stamp, "format": self._name, "client": line[0:client_end]}
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


cdef inline Py_ssize_t _digits_from(str line, Py_ssize_t i, Py_ssize_t n, Py_ssize_t most) noexcept:
    """How many ASCII digits start at ``i`` (counting stops past ``most``)."""
    cdef Py_ssize_t j = i
    while j < n and j - i <= most and _digit(PyUnicode_READ_CHAR(line, j)):
        j += 1
    return j - i


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
        for i in range(19):
            c = PyUnicode_READ_CHAR(line, i)
            if i == 4 or i == 7:
                if c != 47:  # /
                    return None
            elif i == 10:
                if c != 32:
                    return None
            elif i == 13 or i == 16:
                if c != 58:  # :
                    return None
            elif not _digit(c):
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
