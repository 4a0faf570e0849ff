# cython: language_level=3
"""What the compiled parsers (``logstream/parsers/*.pyx``) share: character
classes as ``re.ASCII`` and ``str`` see them, digit runs, the level word a text
starts with, and oslo's context and message (also read inside journal lines).

``cdef inline`` functions in a ``.pxd`` are compiled into each module that
cimports them: no call between modules on the per-line path.
"""

from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_READ_CHAR


cdef inline bint _digit(Py_UCS4 c) noexcept:
    return 48 <= c <= 57


cdef inline bint _upper(Py_UCS4 c) noexcept:
    return 65 <= c <= 90


cdef inline bint _lower(Py_UCS4 c) noexcept:
    return 97 <= c <= 122


cdef inline bint _space(Py_UCS4 c) noexcept:
    # \s of re.ASCII: space, \t \n \v \f \r
    return c == 32 or 9 <= c <= 13


cdef inline bint _word(Py_UCS4 c) noexcept:
    # \w of re.ASCII
    return _digit(c) or _upper(c) or _lower(c) or c == 95


cdef inline bint _isspace(Py_UCS4 c) noexcept:
    # str.isspace() for an ASCII character (str.split() and str.lstrip() use it)
    return c == 32 or 9 <= c <= 13 or 28 <= c <= 31


cdef inline bint _strip_char(Py_UCS4 c) noexcept:
    # common._WORD_STRIP: []<>():!*-
    return (
        c == 91 or c == 93 or c == 60 or c == 62 or c == 40 or c == 41
        or c == 58 or c == 33 or c == 42 or c == 45
    )


cdef inline Py_ssize_t _digits_from(str line, Py_ssize_t i, Py_ssize_t n, Py_ssize_t most) noexcept:
    """How many ASCII digits start at ``i`` (counting stops past ``most``)."""
    cdef Py_ssize_t j = i
    while j < n and j - i <= most and _digit(PyUnicode_READ_CHAR(line, j)):
        j += 1
    return j - i


cdef inline long long _digits_value(str text, Py_ssize_t start, Py_ssize_t end) noexcept:
    """``int(text[start:end])`` for at most 18 ASCII digits (checked by the caller)."""
    cdef long long value = 0
    cdef Py_ssize_t j
    for j in range(start, end):
        value = value * 10 + (<long long>PyUnicode_READ_CHAR(text, j) - 48)
    return value


cdef inline int _level_word(str text, Py_ssize_t *start, Py_ssize_t *end) noexcept:
    """The word ``common.leading_level`` would look up: 1 with its bounds in
    ``start``/``end``, 0 when the text starts with no level word, -1 when its
    first 24 characters hold non-ASCII text (Unicode spaces and letters: the
    caller asks the Python function)."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    cdef Py_ssize_t m = n if n < 24 else 24
    cdef Py_ssize_t i = 0, j, a, b, x
    cdef Py_UCS4 c
    cdef bint upper = True
    for x in range(m):
        if PyUnicode_READ_CHAR(text, x) > 127:
            return -1
    while i < m and _isspace(PyUnicode_READ_CHAR(text, i)):
        i += 1
    if i == m:
        return 0
    j = i
    while j < m and not _isspace(PyUnicode_READ_CHAR(text, j)):
        j += 1
    a = i
    b = j
    while a < b and _strip_char(PyUnicode_READ_CHAR(text, a)):
        a += 1
    while b > a and _strip_char(PyUnicode_READ_CHAR(text, b - 1)):
        b -= 1
    if a == b or b - a > 13:
        return 0
    for x in range(a, b):
        c = PyUnicode_READ_CHAR(text, x)
        if _lower(c):
            upper = False
        elif not _upper(c):
            return 0  # not isalpha
    if not upper:
        c = PyUnicode_READ_CHAR(text, i)
        if PyUnicode_READ_CHAR(text, j - 1) != 58 and c != 91 and c != 60 and c != 40:
            return 0  # neither upper case nor "word:", "[word", "<word", "(word"
    start[0] = a
    end[0] = b
    return 1


cdef inline bint _none_id(str token) noexcept:
    # oslo._NONE: "-", "None", ""
    return token == "-" or token == "None" or token == ""


cdef inline void _oslo_context(dict fields, str context) except *:
    """``oslo._context``: ``req-<id> <user> <project> ...``, the ids by offsets."""
    cdef Py_ssize_t size, first, second, third, index, count
    cdef str token, user, project
    cdef list tokens
    if context.startswith("req-"):
        # context.split(" ", 3): the request id, then user and project
        size = PyUnicode_GET_LENGTH(context)
        first = context.find(" ")
        if first < 0:
            fields["request_id"] = context
            return
        fields["request_id"] = context[:first]
        second = context.find(" ", first + 1)
        token = context[first + 1 : second if second >= 0 else size]
        if not _none_id(token):
            fields["user_id"] = token
        if second >= 0:
            third = context.find(" ", second + 1)
            token = context[second + 1 : third if third >= 0 else size]
            if not _none_id(token):
                fields["project_id"] = token
        return
    tokens = context.split()
    count = len(tokens)
    for index in range(count):
        if (<str>tokens[index]).startswith("req-"):
            fields["request_id"] = tokens[index]
            user = tokens[index + 1] if index + 1 < count else "-"
            project = tokens[index + 2] if index + 2 < count else "-"
            if not _none_id(user):
                fields["user_id"] = user
            if not _none_id(project):
                fields["project_id"] = project
            return


cdef inline void _oslo_message(dict fields, str message) except *:
    """``oslo._message``: ``[instance: x]`` and the debug suffix, found by offsets."""
    cdef Py_ssize_t end, space, colon, space2, pid_at, n
    cdef str digits, function
    if message.startswith("[instance: "):
        end = message.find("] ", 11)
        if end > 0:
            fields["instance_id"] = message[11:end]
            message = message[end + 2 :]
    n = PyUnicode_GET_LENGTH(message)
    if n and _digit(PyUnicode_READ_CHAR(message, n - 1)):
        space = message.rfind(" ")
        colon = message.rfind(":", space + 1)
        digits = message[colon + 1 :]
        if (
            space > 0
            and colon > 0
            and message.endswith(".py", space + 1, colon)
            and PyUnicode_GET_LENGTH(digits) <= 18
            and digits.isascii()
            and digits.isdigit()
        ):
            space2 = message.rfind(" ", 0, space)
            function = message[space2 + 1 : space]
            if space2 >= 0 and function.isidentifier():
                fields["function"] = function
                fields["file"] = message[space + 1 : colon]
                fields["line"] = int(digits)
                if space2 > 0 and PyUnicode_READ_CHAR(message, space2 - 1) == 41:  # ")"
                    pid_at = message.rfind(" from (pid=", 0, space2)
                    if pid_at >= 0:
                        space2 = pid_at
                message = message[:space2]
    fields["message"] = message


cdef inline bint _stamp19(str line, Py_UCS4 date_sep) noexcept:
    """``\\d{4}<sep>\\d\\d<sep>\\d\\d \\d\\d:\\d\\d:\\d\\d`` at the start of ``line`` (at least
    19 characters long: checked by the caller); ``date_sep`` is ``-`` or ``/``."""
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    for i in range(19):
        c = PyUnicode_READ_CHAR(line, i)
        if i == 4 or i == 7:
            if c != date_sep:
                return False
        elif i == 10:
            if c != 32:
                return False
        elif i == 13 or i == 16:
            if c != 58:  # :
                return False
        elif not _digit(c):
            return False
    return True
