# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The ``parse`` filter's per-line loop, compiled (built by scripts/bootstrap with Cython).

:class:`ParseStream` is ``filters/parse.py``'s ``_Stream`` (with
:class:`logstream.streams.Stream`'s ``start``/``add``/``finish``) as a C
struct, so the loop reads and writes a stream's state without attribute
look-ups; it also keeps its parser's ``parse``, ``continues``, ``folds`` and
``states_level`` at hand. :class:`ParseLoop` runs the steps
``ParseFilter.process`` runs for a line its stream's format knows, and hands
every other line (unknown, already structured, not text, evicted streams,
records to join) to the filter's own Python methods. The Python loop in
``filters/parse.py`` stays the reference: ``tests/test_speedups.py`` runs
both on the same events and compares every event out and every count.
"""

from cpython.dict cimport PyDict_GetItem, PyDict_Update
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_READ_CHAR

from logstream.event import add_tag

cdef str _TAG_MULTILINE = "multiline"
cdef Py_ssize_t _MAX_SCOPES = 256


cdef inline object _get(dict mapping, object key):
    """``mapping.get(key)`` for a string ``key``, without a method call."""
    cdef PyObject *found = PyDict_GetItem(mapping, key)
    return <object>found if found is not NULL else None


cdef inline Py_ssize_t _text_bytes(str text):
    if text.isascii():
        return PyUnicode_GET_LENGTH(text)
    return len(text.encode("utf-8", "surrogatepass"))


cdef class ParseStream:
    """A stream's format, detection state, levels and held record."""

    cdef public object key
    # The held record's first event (None: nothing held), its head fields,
    # its further lines (None until a second one comes), size and last time.
    cdef public object event
    cdef public dict head
    cdef public object parts
    cdef public Py_ssize_t lines
    cdef public Py_ssize_t size
    cdef public double last
    cdef object _first
    # Detected from a line without a timestamp: switch at the first line that has one.
    cdef public bint tentative
    # Lines in a row the stream's format did not know.
    cdef public Py_ssize_t misses
    # Last level stated, by (program, pid).
    cdef public dict levels
    # Head of a record let go before its end; raw lines (keep_original only).
    cdef public object cut
    cdef public object raw
    cdef object _parser
    cdef object _parse
    cdef object _continues
    cdef bint _folds
    cdef bint _states_level

    def __init__(self, key, parser=None):
        self.key = key
        self.event = None
        self.head = {}
        self.parts = None
        self.lines = 0
        self.size = 0
        self.last = 0.0
        self._first = ""
        self.tentative = False
        self.misses = 0
        self.levels = {}
        self.cut = None
        self.raw = None
        self.parser = parser

    @property
    def parser(self):
        return self._parser

    @parser.setter
    def parser(self, parser):
        self._parser = parser
        if parser is None:
            self._parse = self._continues = None
            self._folds = self._states_level = False
        else:
            self._parse = parser.parse
            self._continues = parser.continues
            self._folds = parser.folds
            self._states_level = parser.states_level

    cpdef start(self, event, dict head, text, double now):
        """Hold ``event`` (whose message is ``text``) as the first line of a group."""
        self.event = event
        self.head = head
        self.parts = None
        self.lines = 1
        self.size = -1  # the first line's bytes are counted when a second one comes
        self.last = now
        self._first = text

    cpdef bint add(self, text, double now, Py_ssize_t max_lines, Py_ssize_t max_bytes) except -1:
        """Append a line; ``False`` (and nothing added) when a bound would be passed."""
        cdef Py_ssize_t size = self.size
        if size < 0:
            size = _text_bytes(self._first)
        size += 1 + _text_bytes(text)
        if self.lines >= max_lines or size > max_bytes:
            return False
        if self.parts is None:
            self.parts = [self._first]
        self.parts.append(text)
        self.lines += 1
        self.size = size
        self.last = now
        return True

    def finish(self, str separator="\n", bint trim=False, put=None):
        """Release the held event, its message joined from every line."""
        cdef object event = self.event
        if event is None:
            raise RuntimeError("no group is held")  # a bug in the caller, never input
        cdef list parts = self.parts
        cdef object tail
        if parts is not None:
            if trim:
                while len(parts) > 1:
                    tail = parts[len(parts) - 1]  # (no negative indexes: wraparound=False)
                    if tail and not tail.isspace():
                        break
                    parts.pop()
            if len(parts) > 1:
                if put is None:
                    event["message"] = separator.join(parts)
                else:
                    put(event, separator.join(parts))
                add_tag(event, _TAG_MULTILINE)
        self.event = None
        self.parts = None
        self.head = {}
        self._first = ""
        return event


cdef class ParseLoop:
    """``ParseFilter.process`` for lines without ``keep_original``."""

    cdef object _filter
    cdef object _table
    cdef dict _open
    cdef object _source
    cdef object _get_line
    cdef tuple _names
    cdef object _key_of
    cdef frozenset _parsed
    cdef str _default_level
    cdef bint _inherit
    cdef bint _multiline
    cdef object _apply
    cdef bint _plain_apply
    cdef bint _auto
    cdef Py_ssize_t _redetect_after
    cdef Py_ssize_t _max_lines
    cdef Py_ssize_t _max_bytes

    def __init__(self, parse_filter, table, frozenset parsed, bint plain_apply):
        """``parse_filter``'s settings are read once here (they never change)."""
        self._filter = parse_filter
        self._table = table
        self._parsed = parsed
        self._plain_apply = plain_apply
        self._open = parse_filter._open
        self._source = parse_filter._source
        self._get_line = parse_filter._get_line
        self._names = parse_filter._key_names
        self._key_of = parse_filter._key
        self._default_level = parse_filter._default_level
        self._inherit = parse_filter._inherit
        self._multiline = parse_filter._multiline
        self._apply = parse_filter._apply
        self._auto = parse_filter._auto
        self._redetect_after = parse_filter._redetect_after
        self._max_lines = parse_filter._max_lines
        self._max_bytes = parse_filter._max_bytes

    def process(self, list batch, double now):
        cdef list out = []
        cdef dict event, fields, levels
        cdef ParseStream stream = None
        cdef object key, last_key = None, line, value, held, text, level, scope
        cdef object first = None, second = None, third = None
        cdef object one, two, three, last_one = None, last_two = None, last_three = None
        cdef object table = self._table
        cdef object evicted = table.evicted
        cdef object streams = table._streams
        cdef object move_to_end = streams.move_to_end
        cdef object parse_filter = self._filter
        cdef frozenset parsed = self._parsed
        cdef dict open_streams = self._open
        cdef object source = self._source
        cdef bint names = self._names is not None
        cdef Py_ssize_t n, merged = 0
        cdef Py_UCS4 last_char
        cdef void *found
        if names:
            first, second, third = self._names
        for item in batch:
            event = <dict?>item
            if source is not None:
                found = PyDict_GetItem(event, source)
                line = <object>found if found is not NULL else None
            else:
                line = self._get_line(event)
            if names:
                one, two, three = _get(event, first), _get(event, second), _get(event, third)
                if (
                    stream is not None
                    and (one is last_one or one == last_one)
                    and (two is last_two or two == last_two)
                    and (three is last_three or three == last_three)
                ):
                    key = last_key  # the same stream: no key tuple built
                else:
                    key = (one, two, three)
                    last_one, last_two, last_three = one, two, three
            else:
                key = self._key_of(event)
            if stream is None or (key is not last_key and key != last_key):
                # StreamTable.get, inline for a stream it has (an unhashable key,
                # a new stream and evictions go through it).
                found = PyDict_GetItem(streams, key)
                if found is not NULL:
                    stream = <ParseStream?>found
                    move_to_end(key)
                else:
                    stream = <ParseStream?>table.get(key)
                    if evicted:
                        parse_filter._release_evicted(out)
                last_key = key
            found = PyDict_GetItem(event, "format")
            if found is not NULL and type(<object>found) is str and <object>found in parsed:
                parse_filter._already_parsed(stream, event, out)
                continue
            if type(line) is not str:
                line = parse_filter._coerce(line, event)
                if line is None:
                    parse_filter._no_text(stream, event, out)
                    continue
            n = PyUnicode_GET_LENGTH(line)
            if n:
                last_char = PyUnicode_READ_CHAR(line, n - 1)
                if last_char == 10 or last_char == 13:
                    line = (<str>line).rstrip("\r\n")
            if stream._parse is None:
                parse_filter._unknown(stream, event, line, now, out)
                continue
            value = stream._parse(line, event)
            if value is None:
                # A line its stream's format does not know: ParseFilter._unknown,
                # inline for the common one -- a continuation line of the held
                # record, with no detection due.
                if stream.event is not None and not (
                    self._auto
                    and (stream.tentative or stream.misses + 1 > self._redetect_after)
                ):
                    stream.misses += 1
                    if stream.add(line, now, self._max_lines, self._max_bytes):
                        merged += 1
                    else:  # a bound: the record goes, its rest starts a split event
                        parse_filter._fold(stream, event, line, line, now, out)
                    continue
                parse_filter._unknown(stream, event, line, now, out)
                continue
            fields = <dict?>value
            stream.misses = 0
            if stream.tentative and "@timestamp" in fields:
                stream.tentative = False
            held = stream.event
            if held is not None:
                if stream._continues is not None:
                    text = stream._continues(stream.head, fields)
                    if text is not None:
                        parse_filter._fold(stream, event, text, line, now, out)
                        continue
                if stream.parts is None:
                    stream.event = None  # a one-line record: nothing to join
                    out.append(held)
                else:
                    out.append(parse_filter._finish(stream))
            stream.cut = None
            if stream._states_level:
                if "level" not in fields:
                    fields["level"] = self._default_level
            else:
                level = _get(fields, "level")
                levels = stream.levels
                scope = (_get(fields, "program"), _get(fields, "pid"))
                if level is None:
                    fields["level"] = (
                        levels.get(scope, self._default_level) if self._inherit
                        else self._default_level
                    )
                elif levels.get(scope) != level:
                    if len(levels) >= _MAX_SCOPES:
                        levels.clear()
                    levels[scope] = level
            if self._plain_apply:
                PyDict_Update(event, fields)
            else:
                self._apply(event, fields)
            if self._multiline and stream._folds:
                found = PyDict_GetItem(fields, "message")
                stream.start(event, fields, <object>found if found is not NULL else line, now)
                open_streams[stream.key] = stream
            else:
                out.append(event)
        parse_filter._merged += merged
        return out
