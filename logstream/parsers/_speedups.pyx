# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled fast paths of the hottest parsers (built by scripts/bootstrap with Cython).

Each class here reads a line exactly as the pure-Python parser it stands in
for, without Python's regex engine: one left-to-right scan over the line's
characters. The Python parser stays the reference: tests run every format's
generated lines, the corpus and random text through both and compare the
fields (``tests/test_speedups.py``). Where this module is not built, the
parsers run in pure Python (``LOGSTREAM_PURE=1`` forces that).
"""

from cpython.unicode cimport PyUnicode_READ_CHAR, PyUnicode_GET_LENGTH

from logstream.parsers._scan cimport (
    _stamp19,
    _digit,
    _digits_from,
    _digits_value,
    _oslo_context,
    _oslo_message,
    _space,
    _upper,
)

cdef extern from "Python.h":
    dict _PyDict_NewPresized(Py_ssize_t minused)

# The level words oslo.log writes (its levels, and TRACE/AUDIT): read without a
# copy of the word; any other word goes through the level map.
cdef tuple _OSLO_WORDS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "TRACE", "AUDIT")


cdef inline bint _same(str a, Py_ssize_t at, str b, Py_ssize_t count) noexcept:
    """Whether ``a[at:at + count] == b[:count]`` (both long enough)."""
    cdef Py_ssize_t j
    for j in range(count):
        if PyUnicode_READ_CHAR(a, at + j) != PyUnicode_READ_CHAR(b, j):
            return False
    return True


cdef class Oslo:
    """``oslo.OsloParser.parse`` without the regex (same fields, same ``None``).

    The previous line's time is remembered: a line of the same second reuses
    its UTC prefix, one of the same millisecond its whole ``@timestamp``.
    """

    cdef dict _known_levels
    cdef object _levels_get
    cdef dict _known_stamps
    cdef object _stamps_local
    cdef str _name
    cdef tuple _word_infos
    cdef str _last_stamp  # the previous line's first 23 characters ("" at first)
    cdef str _last_prefix
    cdef str _last_time

    def __init__(self, str name, dict known_levels, levels_get, dict known_stamps, stamps_local):
        self._name = name
        self._known_levels = known_levels
        self._levels_get = levels_get
        self._known_stamps = known_stamps
        self._stamps_local = stamps_local
        self._word_infos = tuple(levels_get(word) for word in _OSLO_WORDS)
        self._last_stamp = ""
        self._last_prefix = ""
        self._last_time = ""

    cdef object _level(self, str line, Py_ssize_t start, Py_ssize_t end):
        cdef Py_ssize_t index, size = end - start
        cdef str word
        for index in range(7):
            word = <str>_OSLO_WORDS[index]
            if PyUnicode_GET_LENGTH(word) == size and _same(line, start, word, size):
                return self._word_infos[index]
        word = line[start:end]
        info = self._known_levels.get(word)
        if info is None:
            info = self._levels_get(word)
        return info

    cdef object _time(self, str line):
        """The line's ``@timestamp`` (``None``: not a valid time)."""
        cdef str stamp, prefix
        if PyUnicode_GET_LENGTH(self._last_stamp) == 23:
            if _same(line, 0, self._last_stamp, 23):
                return self._last_time
            if _same(line, 0, self._last_stamp, 19):
                self._last_stamp = line[0:23]
                self._last_time = f"{self._last_prefix}.{line[20:23]}Z"
                return self._last_time
        stamp = line[0:19]
        prefix = self._known_stamps.get(stamp)
        if prefix is None:
            prefix = self._stamps_local(stamp)
            if prefix is None:
                return None
        self._last_stamp = line[0:23]
        self._last_prefix = prefix
        self._last_time = f"{prefix}.{line[20:23]}Z"
        return self._last_time

    def parse(self, str line, event):
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(line)
        cdef Py_ssize_t i, k, end, close, word_at, word_end, logger_at, logger_end
        cdef Py_ssize_t pid_at = -1, pid_end = 0
        cdef Py_UCS4 c
        cdef str logger
        cdef object context = None, message = None, info, stamp
        cdef dict fields
        if n < 25:  # stamp (19) "." 3 digits " " level
            return None
        # (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.
        if not _stamp19(line, 45):  # -
            return None
        if PyUnicode_READ_CHAR(line, 19) != 46:  # .
            return None
        # (\d{3,6}) then a space
        k = _digits_from(line, 20, n, 6)
        if k < 3 or k > 6 or 20 + k >= n or PyUnicode_READ_CHAR(line, 20 + k) != 32:
            return None
        i = 21 + k
        # (?:(\d{1,10}) )?
        k = _digits_from(line, i, n, 10)
        if k:
            if k > 10 or i + k >= n or PyUnicode_READ_CHAR(line, i + k) != 32:
                return None
            pid_at, pid_end = i, i + k
            i += k + 1
        # ([A-Z]+) then a space
        k = i
        while k < n and _upper(PyUnicode_READ_CHAR(line, k)):
            k += 1
        if k == i or k >= n or PyUnicode_READ_CHAR(line, k) != 32:
            return None
        word_at, word_end = i, k
        i = k + 1
        # ([^\s\[]\S*)
        if i >= n:
            return None
        c = PyUnicode_READ_CHAR(line, i)
        if _space(c) or c == 91:  # [
            return None
        k = i + 1
        while k < n and not _space(PyUnicode_READ_CHAR(line, k)):
            k += 1
        logger_at, logger_end = i, k
        if k < n:
            # (?: \[([^\]]*)\])?(?: (.*))?\Z: only a space may follow the logger
            if PyUnicode_READ_CHAR(line, k) != 32:
                return None
            end = k + 1
            if end < n and PyUnicode_READ_CHAR(line, end) == 91:
                close = line.find("]", end + 1)
                if close >= 0 and (close + 1 == n or PyUnicode_READ_CHAR(line, close + 1) == 32):
                    context = line[end + 1 : close]
                    if close + 1 < n:
                        message = line[close + 2 :]
                else:
                    message = line[end:]
            else:
                message = line[end:]
        info = self._level(line, word_at, word_end)
        if info is None:
            return None
        stamp = self._time(line)
        if stamp is None:
            return None
        fields = _PyDict_NewPresized(10)
        fields["@timestamp"] = stamp
        fields["format"] = self._name
        fields["level"] = (<tuple>info)[0]
        fields["logger"] = line[logger_at:logger_end]
        if (<tuple>info)[1] is not None:
            fields["level_original"] = (<tuple>info)[1]
        if pid_at >= 0:
            fields["pid"] = _digits_value(line, pid_at, pid_end)
        if context is not None and context != "-":
            _oslo_context(fields, <str>context)
        if not message:
            fields["message"] = ""
        else:
            k = PyUnicode_GET_LENGTH(message)
            if PyUnicode_READ_CHAR(message, 0) == 91 or _digit(PyUnicode_READ_CHAR(message, k - 1)):
                _oslo_message(fields, <str>message)
            else:
                fields["message"] = message
        return fields


def oslo_continues(dict head, dict line):
    """``oslo.continues``: a TRACE line, or an ERROR line of the same record, folds
    into the ERROR record (the text to fold, or ``None``)."""
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
