# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled fast path of ``ansible.LogParser.parse`` (built by scripts/bootstrap with Cython).

Reads an ``ansible.log`` line exactly as the pure-Python parser does (same
fields, same ``None``), without Python's regex engine for the prefix (the
``_LOG_LINE`` regex becomes one scan) nor for the common playbook lines
(banners, ``ok: [host]`` results, warnings, ``<host>`` lines). The rarer
playbook lines (``included:``, ad-hoc ``host | SUCCESS``, recap) go to the
Python ``classify``; a line whose ``u=``/``n=`` value holds a ``|`` (where
the regex backtracks into the value) goes to the Python parser.
The Python parser stays the reference (``tests/test_speedups_text.py``).
"""

from cpython.unicode cimport PyUnicode_READ_CHAR, PyUnicode_GET_LENGTH, Py_UNICODE_ISSPACE

from logstream.parsers._scan cimport _digit, _digits_value, _space, _upper, _stamp19

from logstream.parsers.common import strip_ansi


cdef inline bint _ascii_number(str text) noexcept:
    """``text.isdigit() and text.isascii()``."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), i
    if n == 0:
        return False
    for i in range(n):
        if not _digit(PyUnicode_READ_CHAR(text, i)):
            return False
    return True


cdef str _INFO = "INFO"
cdef str _NOTICE = "NOTICE"
cdef str _WARNING = "WARNING"
cdef str _ERROR = "ERROR"
cdef str _DEBUG = "DEBUG"

# _BANNERS of ansible.py
cdef tuple _BANNERS = (
    ("TASK [", "ansible_task"),
    ("PLAY [", "ansible_play"),
    ("RUNNING HANDLER [", "ansible_task"),
)
cdef tuple _PLAIN_BANNERS = ("PLAY RECAP", "PLAYBOOK: ", "META: ", "PLAY [")
# _RESULT's words -> (level, original)
cdef dict _RESULTS = {
    "ok": (_INFO, "ok"),
    "skipping": (_INFO, "skipping"),
    "changed": (_NOTICE, "changed"),
    "fatal": (_ERROR, "fatal"),
    "failed": (_ERROR, "failed"),
    "unreachable": (_ERROR, "unreachable"),
}


cdef int _result(str text, Py_ssize_t n, dict fields) except -1:
    """``_RESULT.match``: ``(ok|changed|...): \\[([^\\]]{1,300})\\]``; 1 when it matched."""
    cdef Py_ssize_t colon, end
    cdef tuple info
    colon = text.find(": [", 0, 15)
    if colon < 2:
        return 0
    info = _RESULTS.get(text[:colon])
    if info is None:
        return 0
    end = text.find("]", colon + 3, colon + 304)
    if end <= colon + 3:
        return 0
    fields["level"] = info[0]
    fields["level_original"] = info[1]
    fields["ansible_host"] = text[colon + 3 : end]
    return 1


cdef dict _ADHOC_RESULTS = {
    "SUCCESS": (_INFO, "SUCCESS"),
    "CHANGED": (_NOTICE, "CHANGED"),
    "FAILED!": (_ERROR, "FAILED"),
    "UNREACHABLE!": (_ERROR, "UNREACHABLE"),
}


cdef int _adhoc(str text, Py_ssize_t n, dict fields) except -1:
    """``_ADHOC.match`` (``\\S``, ``\\s`` of Unicode; ``$`` also before a last newline):
    ``(\\S{1,300}) \\| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!)(?: =>|\\s*\\|| \\(|$)``."""
    cdef Py_ssize_t h = 0, w, p
    cdef str word
    cdef tuple info
    cdef Py_UCS4 c
    while h < n and h <= 300 and not Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(text, h)):
        h += 1
    # the \S run cannot give back: " | " starts with a space
    if h < 1 or h > 300 or not text.startswith(" | ", h):
        return 0
    w = h + 3
    # no word is a prefix of another: the word ends at a space, or at its last character
    info = None
    for word in ("SUCCESS", "CHANGED", "FAILED!", "UNREACHABLE!"):
        if text.startswith(word, w):
            info = <tuple>_ADHOC_RESULTS[word]
            p = w + PyUnicode_GET_LENGTH(word)
            break
    if info is None:
        return 0
    # (?: =>|\s*\|| \(|$)
    if not (
        text.startswith(" =>", p)
        or text.startswith(" (", p)
        or p == n
        or (p == n - 1 and PyUnicode_READ_CHAR(text, p) == 10)
    ):
        while p < n:
            c = PyUnicode_READ_CHAR(text, p)
            if not Py_UNICODE_ISSPACE(c):
                break
            p += 1
        if p >= n or PyUnicode_READ_CHAR(text, p) != 124:  # |
            return 0
    fields["level"] = info[0]
    fields["level_original"] = info[1]
    fields["ansible_host"] = text[:h]
    return 1


cdef inline Py_ssize_t _ascii_spaces(str text, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and _space(PyUnicode_READ_CHAR(text, i)):
        i += 1
    return i


cdef inline Py_ssize_t _number(str text, Py_ssize_t i, Py_ssize_t n, bint *nonzero) noexcept:
    """Where ``\\d{1,9}`` (greedy) ends from ``i``, -1 when it does not match; ``nonzero``:
    whether the digits it took are not all zeros."""
    cdef Py_ssize_t j = i
    cdef Py_UCS4 c
    nonzero[0] = False
    while j < n and j - i < 9:
        c = PyUnicode_READ_CHAR(text, j)
        if not _digit(c):
            break
        if c != 48:
            nonzero[0] = True
        j += 1
    return j if j > i else -1


cdef int _recap(str text, Py_ssize_t n, dict fields) except -1:
    """``_RECAP.match`` (``re.ASCII``): ``(\\S{1,300})\\s+: ok=(\\d{1,9})\\s+changed=(\\d{1,9})
    \\s+unreachable=(\\d{1,9})\\s+failed=(\\d{1,9})``."""
    cdef Py_ssize_t h = 0, i, s
    cdef bint unreachable = False, failed = False, ignored = False
    cdef str key
    while h < n and h <= 300 and not _space(PyUnicode_READ_CHAR(text, h)):
        h += 1
    # each \S+ / \s+ / \d{1,9} run is followed by a character it cannot hold:
    # nothing to backtrack (a run of more than 9 digits is followed by a digit)
    if h < 1 or h > 300:
        return 0
    i = h
    for key in (": ok=", "changed=", "unreachable=", "failed="):
        s = _ascii_spaces(text, i, n)
        if s == i or not text.startswith(key, s):
            return 0
        i = s + PyUnicode_GET_LENGTH(key)
        if key == "unreachable=":
            i = _number(text, i, n, &unreachable)
        elif key == "failed=":
            i = _number(text, i, n, &failed)  # the last: \d{1,9} takes up to 9 digits
        else:
            i = _number(text, i, n, &ignored)
        if i < 0:
            return 0
        if key != "failed=" and i < n and _digit(PyUnicode_READ_CHAR(text, i)):
            return 0  # more than 9 digits: \\s+ cannot follow
    fields["level"] = _ERROR if unreachable or failed else _INFO
    fields["ansible_host"] = text[:h]
    return 1


cdef object _classify(str text, dict fields, object py_classify):
    """``ansible.classify`` (``text`` not empty): True / False."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), end
    cdef Py_UCS4 first = PyUnicode_READ_CHAR(text, 0)
    cdef str prefix, key
    if first == 84 or first == 80 or first == 82 or first == 77:  # T P R M
        for prefix, key in _BANNERS:
            if text.startswith(prefix):
                end = text.find("]", PyUnicode_GET_LENGTH(prefix))
                if end > 0:
                    fields[key] = text[PyUnicode_GET_LENGTH(prefix) : end]
                    fields["level"] = _INFO
                    return True
        if text.startswith(_PLAIN_BANNERS):
            fields["level"] = _INFO
            return True
    elif first == 111 or first == 99 or first == 115 or first == 102 or first == 117 or first == 105:
        # o c s f u i: a result; "included: ..." lines go to the Python code
        if _result(text, n, fields):
            return True
        if text.startswith("included: "):
            return py_classify(text, fields)
    elif first == 91:  # [
        if text.startswith("[WARNING]"):
            fields["level"] = _WARNING
            return True
        if text.startswith("[DEPRECATION WARNING]"):
            fields["level"] = _WARNING
            fields["level_original"] = "DEPRECATION WARNING"
            return True
        if text.startswith("[ERROR]"):
            fields["level"] = _ERROR
            return True
    elif first == 69:  # E
        if text.startswith("ERROR!"):
            fields["level"] = _ERROR
            fields["level_original"] = "ERROR!"
            return True
    elif first == 60:  # <
        end = text.find("> ", 1)
        if 0 < end < 300:
            fields["level"] = _DEBUG
            fields["ansible_host"] = text[1:end]
            return True
    if text.find(" | ", 0, 302) >= 0 and _adhoc(text, n, fields):
        return True
    if ": ok=" in text and _recap(text, n, fields):
        return True
    return False


cdef class AnsibleLog:
    """``ansible.LogParser.parse`` without the regex (same fields, same ``None``)."""

    cdef str _name
    cdef dict _known_stamps
    cdef object _stamps_local
    cdef dict _logging_levels
    cdef object _classify
    cdef object _python_parse

    def __init__(
        self, str name, dict known_stamps, stamps_local, dict logging_levels, classify, python_parse
    ):
        self._name = name
        self._known_stamps = known_stamps
        self._stamps_local = stamps_local
        self._logging_levels = logging_levels
        self._classify = classify
        self._python_parse = python_parse

    def parse(self, str line, event):
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(line)
        cdef Py_ssize_t i, k, p_end, u_start, u_end, s, lv
        cdef Py_UCS4 c
        cdef bint bar = False
        cdef str stamp, first, second, text, pid, user
        cdef object logger = None, logged_level = None, prefix, level
        cdef dict fields
        # (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) p=
        if n < 30:  # stamp (19) ",mmm p=" " u=" "|"
            return None
        if not _stamp19(line, 45):  # -
            return None
        if (
            PyUnicode_READ_CHAR(line, 19) != 44  # ,
            or not _digit(PyUnicode_READ_CHAR(line, 20))
            or not _digit(PyUnicode_READ_CHAR(line, 21))
            or not _digit(PyUnicode_READ_CHAR(line, 22))
            or PyUnicode_READ_CHAR(line, 23) != 32
            or PyUnicode_READ_CHAR(line, 24) != 112  # p
            or PyUnicode_READ_CHAR(line, 25) != 61  # =
        ):
            return None
        # (\S*) u=  (the \S run cannot give back: " u=" starts with a space)
        i = 26
        while i < n and not _space(PyUnicode_READ_CHAR(line, i)):
            i += 1
        p_end = i
        if (
            i + 3 >= n
            or PyUnicode_READ_CHAR(line, i) != 32
            or PyUnicode_READ_CHAR(line, i + 1) != 117  # u
            or PyUnicode_READ_CHAR(line, i + 2) != 61  # =
        ):
            return None
        # (\S*): a "|" in it is where the regex may backtrack: the Python parser reads that
        u_start = i + 3
        i = u_start
        while i < n:
            c = PyUnicode_READ_CHAR(line, i)
            if _space(c):
                break
            if c == 124:
                bar = True
            i += 1
        if bar:
            return self._python_parse(line, event)
        u_end = i
        # what follows must start with a space (" n=", " LEVEL", " |")
        if i >= n or PyUnicode_READ_CHAR(line, i) != 32:
            return None
        # (?: n=(\S*))?
        if (
            i + 2 < n
            and PyUnicode_READ_CHAR(line, i + 1) == 110  # n
            and PyUnicode_READ_CHAR(line, i + 2) == 61  # =
        ):
            k = i + 3
            while k < n:
                c = PyUnicode_READ_CHAR(line, k)
                if _space(c):
                    break
                if c == 124:
                    return self._python_parse(line, event)
                k += 1
            logger = line[i + 3 : k]
            i = k
            # without n=, " n..." cannot match the rest: no need to try it
        # (?: ([A-Z]{3,8}))? ?\| ?(.*)\Z  at i
        s = -1
        if i < n:
            c = PyUnicode_READ_CHAR(line, i)
            if c == 124:  # |
                s = i + 1
            elif c == 32 and i + 1 < n:
                c = PyUnicode_READ_CHAR(line, i + 1)
                if c == 124:
                    s = i + 2
                elif _upper(c):
                    k = i + 1
                    while k < n and k - i <= 8 and _upper(PyUnicode_READ_CHAR(line, k)):
                        k += 1
                    lv = k - i - 1
                    if 3 <= lv <= 8 and k < n:
                        c = PyUnicode_READ_CHAR(line, k)
                        if c == 124:
                            s = k + 1
                        elif c == 32 and k + 1 < n and PyUnicode_READ_CHAR(line, k + 1) == 124:
                            s = k + 2
                        if s >= 0:
                            logged_level = line[i + 1 : k]
        if s < 0:
            return None
        stamp = line[0:19]
        prefix = self._known_stamps.get(stamp)
        if prefix is None:
            prefix = self._stamps_local(stamp)
            if prefix is None:
                return None
        first = line[26:p_end]
        second = line[u_start:u_end]
        if _ascii_number(first):
            pid, user = first, second
        elif _ascii_number(second):
            pid, user = second, first  # Ansible 2.8 and 2.9
        else:
            pid, user = "", second
        while s < n and PyUnicode_READ_CHAR(line, s) == 32:  # text.lstrip(" ")
            s += 1
        text = line[s:]
        if "\x1b" in text:
            text = strip_ansi(text)
        stamp = f"{prefix}.{line[20:23]}Z"
        k = PyUnicode_GET_LENGTH(pid)
        if k and k <= 10 and user and logger:
            # the usual line: one dict of the right size (same keys, same order)
            fields = {
                "@timestamp": stamp,
                "format": self._name,
                "message": text,
                "pid": _digits_value(pid, 0, k),
                "user": user,
                "logger": logger,
            }
        else:
            fields = {
                "@timestamp": stamp,
                "format": self._name,
                "message": text,
            }
            if k and k <= 10:
                fields["pid"] = _digits_value(pid, 0, k)
            if user:
                fields["user"] = user
            if logger:
                fields["logger"] = logger
        if text:
            _classify(text, fields, self._classify)
        if logged_level is not None and "level" not in fields:
            level = self._logging_levels.get(logged_level)
            if level is not None:
                fields["level"] = level
        return fields
