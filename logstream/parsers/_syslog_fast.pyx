# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled fast path of ``syslog.SyslogParser`` (formats ``syslog`` and ``journal``).

Reads a line exactly as the pure-Python parser does (same fields, in the same
order, same value types, same ``None``), without Python's regex engine: one
left-to-right scan over the line's characters stands in for ``_RFC3164``, the
tag (``_TAG``), the journal's oslo body (``oslo._BODY``), the leading level
word and the journal's ``-- Logs begin ... --`` lines. The Python parser stays
the reference (``tests/test_speedups_syslog.py`` runs both on generated lines,
random edits of them, hypothesis text and the corpus). What it hands back to
Python: terminal escapes (``strip_ansi``, only for text holding ESC), a leading
level word with non-ASCII text in its first 24 characters (``leading_level``)
and the timestamp conversions and their caches (``Timestamps``).
"""

from cpython.unicode cimport PyUnicode_READ_CHAR, PyUnicode_GET_LENGTH

from logstream.parsers._scan cimport (
    _digit,
    _digits_from,
    _isspace,
    _level_word,
    _lower,
    _oslo_context,
    _oslo_message,
    _space,
    _strip_char,
    _upper,
    _word,
)

from logstream.parsers.common import MONTHS, leading_level, strip_ansi
from logstream.severity import from_syslog

cdef tuple _SEVERITY = tuple(from_syslog(number).name for number in range(8))
cdef dict _MONTHS = dict(MONTHS)
cdef str _JOURNAL = "journal"


cdef inline str _frac3(str line, Py_ssize_t start, Py_ssize_t count):
    """common.frac3 of ``line[start:start + count]`` (``count`` 0: no fraction)."""
    if count == 0:
        return "000"
    if count >= 3:
        return line[start : start + 3]
    return (line[start : start + count] + "00")[:3]


cdef inline void _set_level(dict fields, tuple info) except *:
    fields["level"] = info[0]
    if info[1] is not None:
        fields["level_original"] = info[1]


cdef str _program(dict fields, str text, Py_ssize_t s):
    """syslog._program on ``text[s:]``: takes ``tag[pid]:`` off; returns the message.

    ``([^\\s\\[\\]]{1,128}?)(?:\\[([^\\s\\[\\]]{1,128})\\])?:(?: (.*))?\\Z``: the
    shortest tag followed by ``:`` and the end or a space, or by ``[pid]:``
    and the end or a space.
    """
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    cdef Py_ssize_t p, q, last
    cdef Py_UCS4 c
    cdef long long value
    cdef bint number
    if s >= n:
        return text[s:]
    c = PyUnicode_READ_CHAR(text, s)
    if _space(c) or c == 91 or c == 93:
        return text[s:]
    last = s + 129 if s + 129 < n else n  # the tag is 1 to 128 characters
    for p in range(s + 1, last):
        c = PyUnicode_READ_CHAR(text, p)
        if c == 58:  # ":"
            if p + 1 == n:
                fields["program"] = text[s:p]
                return ""
            if PyUnicode_READ_CHAR(text, p + 1) == 32:
                fields["program"] = text[s:p]
                return text[p + 2 :]
            # a colon inside the tag
        elif c == 91:  # "[": "[pid]:" or no tag at all
            q = p + 1
            number = True
            value = 0
            while q < n and q - p <= 129:
                c = PyUnicode_READ_CHAR(text, q)
                if _space(c) or c == 91 or c == 93:
                    break
                if number and _digit(c) and q - p <= 10:
                    value = value * 10 + (<long long>c - 48)
                else:
                    number = False
                q += 1
            if (
                q - p - 1 < 1
                or q - p - 1 > 128
                or q + 1 >= n
                or PyUnicode_READ_CHAR(text, q) != 93
                or PyUnicode_READ_CHAR(text, q + 1) != 58
                or (q + 2 < n and PyUnicode_READ_CHAR(text, q + 2) != 32)
            ):
                return text[s:]
            fields["program"] = text[s:p]
            if number:  # 1 to 10 ASCII digits (syslog._program's test)
                fields["pid"] = value
            else:
                fields["syslog_procid"] = text[p + 1 : q]
            return text[q + 3 :]
        elif _space(c) or c == 93:
            return text[s:]
    return text[s:]


cdef class Syslog:
    """``syslog.SyslogParser.parse`` without the regexes (same fields, same ``None``)."""

    cdef str _name
    cdef bint _journal
    cdef object _yearless
    cdef dict _known_yearless
    cdef dict _known_local
    cdef object _local
    cdef dict _known_offset
    cdef object _with_offset
    cdef object _iso
    cdef object _parse_iso
    cdef dict _oslo_known
    cdef object _oslo_get
    cdef object _levels
    cdef dict _known_levels
    cdef object _levels_get
    cdef object _pure

    def __init__(self, str name, bint journal, stamps, oslo_levels, levels, parse_iso, pure):
        """``stamps`` a ``Timestamps``, ``oslo_levels``/``levels`` the parser's
        ``LevelMap``s, ``parse_iso`` syslog's ISO reader for ``with_offset``,
        ``pure`` the Python parse (for the lines it must run itself)."""
        self._name = name
        self._journal = journal
        self._yearless = stamps.yearless
        # Timestamps.yearless's own cache (cleared in place by refresh()), read
        # first as yearless() does; without one every line calls yearless().
        known = getattr(stamps, "_yearless", None)
        self._known_yearless = known if type(known) is dict else {}
        self._known_local = stamps.known_local
        self._local = stamps.local
        self._known_offset = stamps.known_offset
        self._with_offset = stamps.with_offset
        self._iso = stamps.iso
        self._parse_iso = parse_iso
        self._oslo_known = oslo_levels.known
        self._oslo_get = oslo_levels.get
        self._levels = levels
        self._known_levels = levels.known
        self._levels_get = levels.get
        self._pure = pure

    def parse(self, str line, event):
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(line)
        cdef Py_ssize_t i = 0, j, k, day_at, day_len, clock_at, frac_at = 0, frac_len = 0
        cdef Py_ssize_t zone_at = 0, zone_len = 0, host_at
        cdef int pri = -1
        cdef bint month_form, has_year = False
        cdef Py_UCS4 c
        cdef object prefix, number
        cdef bint rest = False
        cdef str key, host, message
        cdef dict fields
        if n == 0:
            return None
        c = PyUnicode_READ_CHAR(line, 0)
        # (?:<(\d{1,3})>)?
        if c == 60:  # "<"
            k = _digits_from(line, 1, n, 3)
            if k < 1 or k > 3 or 1 + k >= n or PyUnicode_READ_CHAR(line, 1 + k) != 62:
                return None
            pri = 0
            for j in range(1, 1 + k):
                pri = pri * 10 + (<int>PyUnicode_READ_CHAR(line, j) - 48)
            i = 2 + k
            if i >= n:
                return None
            c = PyUnicode_READ_CHAR(line, i)
        if _upper(c):
            # ([A-Z][a-z]{2}) {1,2}(\d{1,2}) (?:(\d{4}) )?(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?
            month_form = True
            if (
                i + 4 >= n
                or not _lower(PyUnicode_READ_CHAR(line, i + 1))
                or not _lower(PyUnicode_READ_CHAR(line, i + 2))
                or PyUnicode_READ_CHAR(line, i + 3) != 32
            ):
                return None
            day_at = i + 4
            if PyUnicode_READ_CHAR(line, day_at) == 32:
                day_at += 1
            day_len = _digits_from(line, day_at, n, 2)
            if day_len < 1 or day_len > 2 or day_at + day_len >= n:
                return None
            if PyUnicode_READ_CHAR(line, day_at + day_len) != 32:
                return None
            clock_at = day_at + day_len + 1
            if (
                _digits_from(line, clock_at, n, 4) == 4
                and clock_at + 4 < n
                and PyUnicode_READ_CHAR(line, clock_at + 4) == 32
            ):
                has_year = True
                clock_at += 5
            # \d\d:\d\d:\d\d
            if clock_at + 8 > n:
                return None
            for j in range(clock_at, clock_at + 8):
                c = PyUnicode_READ_CHAR(line, j)
                if j == clock_at + 2 or j == clock_at + 5:
                    if c != 58:
                        return None
                elif not _digit(c):
                    return None
            j = clock_at + 8
        elif _digit(c):
            # (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?
            month_form = False
            if i + 19 > n:
                return None
            for j in range(i, i + 19):
                c = PyUnicode_READ_CHAR(line, j)
                k = j - i
                if k == 4 or k == 7:
                    if c != 45:  # -
                        return None
                elif k == 10:
                    if c != 84:  # T
                        return None
                elif k == 13 or k == 16:
                    if c != 58:
                        return None
                elif not _digit(c):
                    return None
            j = i + 19
        else:
            if self._journal and c == 45 and line.startswith("-- "):
                return self._meta(line, n)
            return None
        # (?:\.(\d{1,9}))? -- whole run of digits, then the space below
        if j < n and PyUnicode_READ_CHAR(line, j) == 46:  # .
            frac_len = _digits_from(line, j + 1, n, 9)
            if frac_len < 1 or frac_len > 9:
                return None
            frac_at = j + 1
            j = frac_at + frac_len
        if not month_form and j < n:
            c = PyUnicode_READ_CHAR(line, j)
            if c == 90:  # Z
                zone_at = j
                zone_len = 1
            elif c == 43 or c == 45:  # + -
                k = j + 1
                if _digits_from(line, k, n, 2) >= 2:
                    k += 2
                    if k < n and PyUnicode_READ_CHAR(line, k) == 58:
                        k += 1
                    if _digits_from(line, k, n, 2) >= 2:
                        zone_at = j
                        zone_len = k + 2 - j
            j += zone_len
        # " (\S*)(?: (.*))?\Z"
        if j >= n or PyUnicode_READ_CHAR(line, j) != 32:
            return None
        host_at = j + 1
        k = host_at
        while k < n and not _space(PyUnicode_READ_CHAR(line, k)):
            k += 1
        if k < n:
            if PyUnicode_READ_CHAR(line, k) != 32:
                return None
            rest = True
        # The time.
        if month_form:
            if self._journal and (frac_len == 0 or pri >= 0):
                return None
            if not has_year:
                # yearless()'s key: f"{month} {day} {clock}"
                if day_at == i + 4:
                    key = line[i : clock_at + 8]
                else:
                    key = line[i : i + 4] + line[day_at : clock_at + 8]
                prefix = self._known_yearless.get(key)
                if prefix is None:
                    prefix = self._yearless(
                        line[i : i + 3],
                        line[day_at : day_at + day_len],
                        line[clock_at : clock_at + 8],
                    )
            else:
                number = _MONTHS.get(line[i : i + 3])
                if number is None:
                    return None
                key = (
                    f"{line[clock_at - 5 : clock_at - 1]}-{<int>number:02d}-"
                    f"{int(line[day_at : day_at + day_len]):02d} {line[clock_at : clock_at + 8]}"
                )
                prefix = self._known_local.get(key)
                if prefix is None:
                    prefix = self._local(key)
        else:
            if self._journal:
                if pri >= 0:
                    return None
                if zone_len <= 1 or PyUnicode_READ_CHAR(line, zone_at + zone_len - 3) == 58:
                    return None  # journalctl's short-iso writes +hhmm
            if zone_len == 0:
                key = line[i : i + 19]
                prefix = self._known_local.get(key)
                if prefix is None:
                    prefix = self._local(key)
            else:
                if frac_len:
                    key = line[i : i + 19] + line[zone_at : zone_at + zone_len]
                else:
                    key = line[i : zone_at + zone_len]
                prefix = self._known_offset.get(key)
                if prefix is None:
                    prefix = self._with_offset(key, self._parse_iso)
        if prefix is None:
            return None
        if pri > 191:
            return None
        fields = {
            "@timestamp": f"{prefix}.{_frac3(line, frac_at, frac_len)}Z",
            "format": self._name,
        }
        # The host, or no host: "Jun  9 15:50:06 tgtd: ..."
        if k > host_at and PyUnicode_READ_CHAR(line, k - 1) == 58:  # host ends with ":"
            if not rest:
                message = _program(fields, line[host_at:k] + " ", 0)
            else:
                message = _program(fields, line, host_at)
        else:
            if k > host_at:
                fields["host"] = line[host_at:k]
            if not rest:
                message = ""
            else:
                message = _program(fields, line, k + 1)
        if pri >= 0:
            fields["syslog_facility"] = pri >> 3
            fields["syslog_severity"] = pri & 7
            fields["level"] = _SEVERITY[pri & 7]
            if "\x1b" in message:
                message = strip_ansi(message)
            fields["message"] = message
        else:
            self._message_level(fields, message)
        return fields

    cdef void _message_level(self, dict fields, str message) except *:
        """syslog._message_level: an oslo body, else a leading level word."""
        cdef object info
        if "\x1b" in message:
            message = strip_ansi(message)
        if (
            PyUnicode_GET_LENGTH(message)
            and _upper(PyUnicode_READ_CHAR(message, 0))
            and self._body(fields, message)
        ):
            return
        fields["message"] = message
        info = self._leading_level(message)
        if info is not None:
            _set_level(fields, <tuple>info)

    cdef bint _body(self, dict fields, str text) except -1:
        """oslo.parse_body: ``([A-Z]+) ([^\\s\\[]\\S*)(?: \\[([^\\]]*)\\])?(?: (.*))?\\Z``."""
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
        cdef Py_ssize_t i, k, end, close
        cdef Py_UCS4 c
        cdef str word, logger
        cdef object context = None, message = None, info
        k = 0
        while k < n and _upper(PyUnicode_READ_CHAR(text, k)):
            k += 1
        if k == 0 or k >= n or PyUnicode_READ_CHAR(text, k) != 32:
            return False
        word = text[:k]
        i = k + 1
        if i >= n:
            return False
        c = PyUnicode_READ_CHAR(text, i)
        if _space(c) or c == 91:  # [
            return False
        k = i + 1
        while k < n and not _space(PyUnicode_READ_CHAR(text, k)):
            k += 1
        if k < n:
            if PyUnicode_READ_CHAR(text, k) != 32:
                return False
            end = k + 1
            if end < n and PyUnicode_READ_CHAR(text, end) == 91:
                close = text.find("]", end + 1)
                if close >= 0 and (close + 1 == n or PyUnicode_READ_CHAR(text, close + 1) == 32):
                    context = text[end + 1 : close]
                    if close + 1 < n:
                        message = text[close + 2 :]
                else:
                    message = text[end:]
            else:
                message = text[end:]
        info = self._oslo_known.get(word)
        if info is None:
            info = self._oslo_get(word)
        if info is None or (context is None and word != "TRACE"):
            return False
        _set_level(fields, <tuple>info)
        fields["logger"] = text[i:k]
        if context is not None:
            _oslo_context(fields, <str>context)
        if not message:
            fields["message"] = ""
        else:
            _oslo_message(fields, <str>message)
        return True

    cdef object _leading_level(self, str text):
        """common.leading_level; text with non-ASCII in its first 24 characters
        goes to the Python function (Unicode whitespace and letters)."""
        cdef Py_ssize_t a = 0, b = 0
        cdef int found = _level_word(text, &a, &b)
        if found < 0:
            return leading_level(text, self._levels)
        if found == 0:
            return None
        word = text[a:b]
        info = self._known_levels.get(word)
        if info is None:
            info = self._levels_get(word)
        return info

    cdef object _meta(self, str line, Py_ssize_t n):
        """SyslogParser._meta: ``-- (?:Logs begin at \\w{3} (\\S+ \\S+) (\\w+),.*|[^-].*) --\\Z``
        (re.ASCII, no DOTALL: ``.`` is not a newline)."""
        cdef Py_ssize_t k, r1, r2, w
        cdef dict fields
        cdef object stamp
        if n < 7 or PyUnicode_READ_CHAR(line, 3) == 45 or not line.endswith(" --"):
            return None
        if line.find("\n", 4, n - 3) >= 0:
            return None
        fields = {"format": _JOURNAL, "message": line}
        if not line.startswith("Logs begin at ", 3) or n < 21:
            return fields
        for k in range(17, 20):
            if not _word(PyUnicode_READ_CHAR(line, k)):
                return fields
        if PyUnicode_READ_CHAR(line, 20) != 32:
            return fields
        k = 21
        while k < n and not _space(PyUnicode_READ_CHAR(line, k)):
            k += 1
        if k == 21 or k >= n or PyUnicode_READ_CHAR(line, k) != 32:
            return fields
        r1 = k + 1
        k = r1
        while k < n and not _space(PyUnicode_READ_CHAR(line, k)):
            k += 1
        if k == r1 or k >= n or PyUnicode_READ_CHAR(line, k) != 32:
            return fields
        r2 = k
        w = k + 1
        k = w
        while k < n and _word(PyUnicode_READ_CHAR(line, k)):
            k += 1
        if k == w or k >= n - 3 or PyUnicode_READ_CHAR(line, k) != 44:  # ","
            return fields
        if line[w:k] == "UTC":
            stamp = self._iso(line[21:r2])
            if stamp is not None:
                fields["@timestamp"] = stamp
        return fields
