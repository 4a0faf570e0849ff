"""Per-stream state for filters that look at more than one event at a time.

A *stream* is the sequence of events that share the values of some fields
(``host`` + ``path`` + ``type`` by default: one log file of one machine).
:class:`StreamTable` keeps one state object per stream, at most
``max_streams`` of them; the least recently seen stream is evicted first.

:class:`Stream` is the multiline group a stream may hold back: the first
event of a record, whose ``message`` grows by the continuation lines folded
into it. Bounds are checked before a line is added, so a group never holds
more than ``max_lines`` lines nor more than ``max_bytes`` bytes of message
(UTF-8, separators included) -- except a single first line longer than
``max_bytes``, which is the input's business (``max_line_bytes``).

:class:`GroupingFilter` is the part that filters holding such groups share:
the stream table, the streams with a group held (for ``tick``), the
timeout, ``flush``, the release of evicted streams and the ``merged`` drop
count. Each filter keeps its own way of starting, folding and finishing a
group.

Nothing here reads a clock: callers pass the monotonic time in.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final, Generic, TypeVar

from logstream.event import Batch, Event, add_tag
from logstream.fields import MISSING, Path, getter, parse_path
from logstream.metrics import UnitMetrics
from logstream.units import Filter

# Tags of grouped events (Logstash's multiline codec adds "multiline" too).
TAG_MULTILINE: Final = "multiline"
# The group reached max_lines or max_bytes; the rest of the record follows in
# further events tagged TAG_SPLIT.
TAG_LIMIT: Final = "_multilinelimit"
# An event continuing a record that was emitted before (bound reached, or the
# group's timeout passed before this line arrived).
TAG_SPLIT: Final = "_multilinesplit"

KeyFunction = Callable[[Event], Hashable]


def text_bytes(text: str) -> int:
    """UTF-8 length of ``text`` (``str.isascii`` is O(1), so ASCII costs nothing)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def check_stream_key(fields: list[str]) -> list[str]:
    """``fields`` when each is a valid name or path, else ``ValueError`` naming the bad one."""
    for index, field in enumerate(fields):
        try:
            parse_path(field)
        except ValueError as error:
            raise ValueError(f"stream_key[{index}]: {error}") from None
    return fields


def source_getter(path: Path) -> Callable[[Event], Any]:
    """A closure giving the value at ``path`` of an event, ``None`` when missing."""
    if len(path) == 1 and type(path[0]) is str:
        top = path[0]
        return lambda event: event.get(top)
    get = getter(path)
    return lambda event: None if (v := get(event)) is MISSING else v


def key_function(fields: Sequence[str]) -> KeyFunction:
    """A closure giving the stream key of an event: the tuple of the fields' values.

    Fields are names or ``[a][b]`` paths (checked here; raises ``ValueError``).
    A missing field counts as ``None``. The key may be unhashable (a list in
    ``host``); :class:`StreamTable` copes with that.
    """
    paths = [parse_path(field) for field in fields]
    if all(len(path) == 1 and type(path[0]) is str for path in paths):
        names = tuple(str(path[0]) for path in paths)
        if len(names) == 1:
            (one,) = names
            return lambda event: event.get(one)
        if len(names) == 2:
            first, second = names
            return lambda event: (event.get(first), event.get(second))
        if len(names) == 3:
            a, b, c = names
            return lambda event: (event.get(a), event.get(b), event.get(c))
        return lambda event: tuple(event.get(name) for name in names)
    getters = [getter(path) for path in paths]
    return lambda event: tuple(_none_if_missing(get(event)) for get in getters)


def _none_if_missing(value: Any) -> Any:
    return None if value is MISSING else value


def _hashable(key: Any) -> Hashable:
    """A hashable stand-in for a key holding lists or objects."""
    if isinstance(key, tuple):
        return tuple(repr(part) for part in key)
    return repr(key)


S = TypeVar("S", bound="Stream")


class Stream:
    """The group a stream holds back, and the stream's key.

    ``event`` is ``None`` when nothing is held. ``parts`` stays ``None`` until
    a second line arrives, so the common one-line record allocates nothing.
    """

    __slots__ = ("_first", "event", "head", "key", "last", "lines", "parts", "size")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.event: Event | None = None
        self.head: dict[str, Any] = {}
        self.parts: list[str] | None = None
        self.lines = 0
        self.size = 0
        self.last = 0.0
        self._first = ""

    def start(self, event: Event, head: dict[str, Any], text: str, now: float) -> None:
        """Hold ``event`` (whose message is ``text``) as the first line of a group."""
        self.event = event
        self.head = head
        self.parts = None
        self.lines = 1
        self.size = -1  # the first line's bytes are counted when a second one comes
        self.last = now
        self._first = text

    def add(self, text: str, now: float, max_lines: int, max_bytes: int) -> bool:
        """Append a line; ``False`` (and nothing added) when a bound would be passed."""
        size = self.size
        if size < 0:  # most records are one line: their size is never needed
            size = text_bytes(self._first)
        size += 1 + text_bytes(text)
        if self.lines >= max_lines or size > max_bytes:
            return False
        parts = self.parts
        if parts is None:
            parts = self.parts = [self._first]
        parts.append(text)
        self.lines += 1
        self.size = size
        self.last = now
        return True

    def finish(
        self,
        separator: str = "\n",
        trim: bool = False,
        put: Callable[[Event, str], object] | None = None,
    ) -> Event:
        """Release the held event, its message joined from every line.

        ``trim`` drops blank lines at the end of a multi-line record (the
        blank line that separates records in many formats). The joined text
        goes to ``message``, or through ``put`` to another field.
        """
        event = self.event
        if event is None:
            raise RuntimeError("no group is held")  # a bug in the caller, never input
        parts = self.parts
        if parts is not None:
            if trim:
                while len(parts) > 1 and (not parts[-1] or parts[-1].isspace()):
                    parts.pop()
            if len(parts) > 1:
                if put is None:
                    event["message"] = separator.join(parts)
                else:
                    put(event, separator.join(parts))
                add_tag(event, TAG_MULTILINE)
        self.event = None
        self.parts = None
        self.head = {}
        self._first = ""
        return event


class StreamTable(Generic[S]):
    """At most ``max_streams`` stream states, least recently seen evicted first.

    Evicted states are appended to :attr:`evicted`; the caller releases what
    they hold and clears the list. The last stream looked up is remembered,
    so a batch from one stream costs one comparison per event.
    """

    def __init__(self, max_streams: int, make: Callable[[Hashable], S]) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, value: {max_streams}")
        self._max = max_streams
        self._make = make
        self._streams: OrderedDict[Hashable, S] = OrderedDict()
        self._last_key: Any = _NO_KEY
        self._last: S | None = None
        self.evicted: list[S] = []

    def __len__(self) -> int:
        return len(self._streams)

    def values(self) -> list[S]:
        return list(self._streams.values())

    def get(self, key: Any) -> S:
        """The state of stream ``key``, created (and the oldest evicted) when new."""
        last = self._last
        if last is not None and key == self._last_key:
            return last
        streams = self._streams
        try:
            state = streams.get(key)
        except TypeError:  # a list or dict in a key field
            key = _hashable(key)
            state = streams.get(key)
        if state is None:
            if len(streams) >= self._max:
                _, old = streams.popitem(last=False)
                self.evicted.append(old)
            state = streams[key] = self._make(key)
        else:
            streams.move_to_end(key)
        self._last_key = key
        self._last = state
        return state

    def clear(self) -> list[S]:
        """Forget every stream; returns their states."""
        states = list(self._streams.values())
        self._streams.clear()
        self._last_key = _NO_KEY
        self._last = None
        return states


class GroupingFilter(Filter, abc.ABC, Generic[S]):
    """A filter that holds back one group per stream until its record is complete.

    Subclasses fill :attr:`_open` when they start a group (``stream.start``
    then ``self._open[stream.key] = stream``, inline: it is the per-event
    path), add to :attr:`_merged` for each event folded into a group, call
    :meth:`_release_evicted` when ``self._streams.evicted`` is not empty and
    :meth:`_count_merged` at the end of each ``process``.
    """

    def __init__(
        self, name: str, metrics: UnitMetrics, streams: StreamTable[S], timeout_secs: float
    ) -> None:
        super().__init__(name, metrics)
        self._streams = streams
        # Streams holding a group, for tick (entries whose group went are skipped).
        self._open: dict[Any, S] = {}
        self._timeout = timeout_secs
        # Events folded into a group during this batch (counted as dropped, "merged").
        self._merged = 0

    @abc.abstractmethod
    def _finish(self, stream: S) -> Event:
        """Release the group ``stream`` holds (``stream.event`` is not ``None``)."""

    @abc.abstractmethod
    def _mark_cut(self, stream: S) -> None:
        """Remember that the group ``stream`` holds is let go by its timeout.

        Called by ``tick`` just before :meth:`_finish`, while ``stream.head``
        is still the group's head, so lines that continue it later start an
        event tagged ``_multilinesplit``.
        """

    def tick(self, now: float) -> Batch:
        if not self._open:
            return []
        limit = now - self._timeout
        due: Batch = []
        for key, stream in list(self._open.items()):
            if stream.event is None:
                del self._open[key]
            elif stream.last <= limit:
                self._mark_cut(stream)
                due.append(self._finish(stream))
                del self._open[key]
        self.metrics.events_out += len(due)
        return due

    def flush(self) -> Batch:
        held = [self._finish(s) for s in self._streams.values() if s.event is not None]
        self._open.clear()
        self.metrics.events_out += len(held)
        return held

    def _release_evicted(self, out: Batch) -> None:
        """Append the groups of the streams the table evicted to ``out``; forget them."""
        table = self._streams
        for stream in table.evicted:
            if stream.event is not None:
                out.append(self._finish(stream))
            self._open.pop(stream.key, None)
        table.evicted.clear()

    def _count_merged(self) -> None:
        """Count the events folded during this batch as dropped with reason ``merged``."""
        if self._merged:
            self.metrics.drop(self._merged, "merged")
            self._merged = 0


class _NoKey:
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0


_NO_KEY: Final = _NoKey()
