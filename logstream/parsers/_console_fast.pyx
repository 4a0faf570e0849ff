# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled fast path of ``console.ConsoleParser.parse`` (built by scripts/bootstrap with Cython).

Reads a line exactly as the pure-Python parser does (same fields, same
``None``), without Python's regex engine: the ``_LINE`` and ``_XTRACE``
regexes and :func:`logstream.parsers.common.leading_level` become scans over
the line's characters. A first word with non-ASCII text in the first 24
characters goes to the Python ``leading_level`` (``str.isalpha`` and
``str.isupper`` on any Unicode word are not re-implemented here).
The Python parser stays the reference (``tests/test_speedups_text.py``).
"""

from cpython.unicode cimport PyUnicode_READ_CHAR, PyUnicode_GET_LENGTH

from logstream.parsers._scan cimport _digit, _level_word, _stamp19

from logstream.parsers.common import TRACEBACK_START, leading_level, strip_ansi


cdef inline Py_ssize_t _xtrace(str text, Py_ssize_t n) noexcept:
    """``(\\+{1,16}) (.*)\\Z``: where the command starts, or -1."""
    cdef Py_ssize_t m = 0
    while m < n and m <= 16 and PyUnicode_READ_CHAR(text, m) == 43:  # +
        m += 1
    if m < 1 or m > 16 or m >= n or PyUnicode_READ_CHAR(text, m) != 32:
        return -1
    return m + 1


cdef str _INFO = "INFO"
cdef str _ERROR = "ERROR"


cdef class Console:
    """``console.ConsoleParser.parse`` without the regexes (same fields, same ``None``)."""

    cdef str _name
    cdef object _levels
    cdef dict _known_levels
    cdef object _levels_get
    cdef dict _known_stamps
    cdef object _stamps_local

    def __init__(self, str name, levels, dict known_levels, levels_get, dict known_stamps, stamps_local):
        self._name = name
        self._levels = levels
        self._known_levels = known_levels
        self._levels_get = levels_get
        self._known_stamps = known_stamps
        self._stamps_local = stamps_local

    cdef object _leading_level(self, str text):
        """``common.leading_level(text, levels)``."""
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

    def parse(self, str line, event):
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(line)
        cdef Py_ssize_t i, k, start
        cdef Py_UCS4 c
        cdef str stamp, text
        cdef object prefix, info
        cdef dict fields
        # (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3,6}) \| ?(.*)\Z
        if n < 25:
            return self._bare(line, n)
        if not _stamp19(line, 45):  # -
            return self._bare(line, n)
        if PyUnicode_READ_CHAR(line, 19) != 46:  # .
            return self._bare(line, n)
        k = 0
        while 20 + k < n and k <= 6 and _digit(PyUnicode_READ_CHAR(line, 20 + k)):
            k += 1
        if (
            k < 3
            or k > 6
            or 21 + k >= n
            or PyUnicode_READ_CHAR(line, 20 + k) != 32
            or PyUnicode_READ_CHAR(line, 21 + k) != 124  # |
        ):
            return self._bare(line, n)
        start = 22 + k
        if start < n and PyUnicode_READ_CHAR(line, start) == 32:
            start += 1
        stamp = line[0:19]
        prefix = self._known_stamps.get(stamp)
        if prefix is None:
            prefix = self._stamps_local(stamp)
            if prefix is None:
                return None
        text = line[start:]
        if "\x1b" in text:
            text = strip_ansi(text)
        fields = {
            "@timestamp": f"{prefix}.{line[20:23]}Z",
            "format": self._name,
            "message": text,
        }
        n = PyUnicode_GET_LENGTH(text)
        if n:
            c = PyUnicode_READ_CHAR(text, 0)
            if c == 43:  # +
                k = _xtrace(text, n)
                if k >= 0:
                    fields["command"] = text[k:]
                    fields["level"] = _INFO
                    return fields
            elif c == 84 and text.startswith(TRACEBACK_START):  # T
                fields["level"] = _ERROR
                return fields
        info = self._leading_level(text)
        if info is not None:
            fields["level"] = (<tuple>info)[0]
            if (<tuple>info)[1] is not None:
                fields["level_original"] = (<tuple>info)[1]
        return fields

    cdef object _bare(self, str line, Py_ssize_t n):
        """A line without the timestamp: a bare xtrace line, or not console."""
        cdef Py_ssize_t k
        if n and PyUnicode_READ_CHAR(line, 0) == 43:  # +
            k = _xtrace(line, n)
            if k >= 0:
                return {
                    "format": self._name,
                    "level": _INFO,
                    "command": line[k:],
                    "message": line,
                }
        return None
