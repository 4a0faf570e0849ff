"""What every parser shares: the parser contract, levels, timestamps, ANSI escapes, tracebacks.

A parser turns one line of text (and, for the event-shaped formats, the event
itself) into a dict of fields in the default naming (see
:mod:`logstream.parsers`), or ``None`` when the line is not in its format.
Parsers never raise on any ``str``; every option (time zone, the clock for
year-less timestamps) is fixed when the parser is built.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, Protocol

from logstream.clock import Clock
from logstream.event import Event
from logstream.severity import Severity, from_text

Fields = dict[str, Any]
# (level name on the one scale, the source's own spelling when it differs)
LevelInfo = tuple[str, str | None]
# head fields of the held record, fields of the new line -> text to fold, or None
Continues = Callable[[Fields, Fields], str | None]


class Parser(Protocol):
    """One log format."""

    #: The format's name: the value of the ``format`` field and of the config key.
    name: str
    #: Whether lines this parser does not know are continuation lines of the
    #: record before them (tracebacks, JSON bodies), to be folded into it.
    folds: bool
    #: Whether every line the parser accepts states a level (then the filter
    #: keeps no level history for the stream; a line without one would get
    #: the default).
    states_level: bool
    #: The ASCII characters a line of this format may start with, or ``None``
    #: (any). Detection skips the parser for a line starting with another
    #: ASCII character, without running its regex; a line starting with a
    #: non-ASCII character (or an empty one) is always offered.
    starts: str | None
    #: Whether a line of this format can carry a time (``@timestamp``): only
    #: such formats can switch a detected stream to themselves.
    timestamped: bool
    #: For formats whose records span several *parsed* lines (oslo's TRACE
    #: lines): given the held record's fields and a new line's fields, the
    #: text to fold into the held record, or ``None`` when the line starts a
    #: record of its own. ``None`` when the format has no such lines.
    continues: Continues | None

    def parse(self, line: str, event: Event) -> Fields | None:
        """The fields of ``line`` (``event`` is the event it came in), or ``None``.

        Must not raise for any ``line``. A result holds ``format`` and the
        fields the line has; ``level`` only when the line states a level.
        ``@timestamp`` is present when the line carried a valid time, and
        that is what makes a line *strong* evidence of its format.
        """
        ...


# --------------------------------------------------------------------------- compiled fast paths


def compiled(name: str = "_speedups", package: str = "logstream.parsers") -> ModuleType | None:
    """The compiled fast paths ``<package>.<name>`` (a Cython module), or ``None``.

    ``None`` where the module was not built (no Cython or C compiler at
    install time), where its ``.pyx`` source or a ``.pxd`` beside it is newer
    than the build (a stale module would not read lines as the Python code
    beside it does; ``scripts/bootstrap`` rebuilds it), or when ``LOGSTREAM_PURE`` is set
    (to a value other than ``0``): then the parsers run their pure-Python
    code, the reference the compiled code is tested against.
    """
    if os.environ.get("LOGSTREAM_PURE", "0") not in ("", "0"):
        return None
    try:
        module = importlib.import_module(f"{package}.{name}")
    except ImportError:
        _warn_once(
            f"{package}.{name}",
            "%s is not built (no C compiler or Cython at install?): using the pure-Python "
            "code, which is slower (run scripts/bootstrap to build it)",
        )
        return None
    built = getattr(module, "__file__", None)
    if built is not None:
        folder = os.path.dirname(built)
        # Its .pyx, and the .pxd files beside it (shared inline helpers it cimports).
        sources = [os.path.join(folder, name + ".pyx")]
        sources += [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".pxd")]
        try:
            built_at = os.path.getmtime(built)
            source = next((s for s in sources if os.path.getmtime(s) > built_at), None)
        except OSError:  # installed without its source: nothing to compare
            source = None
        if source is not None:
            _warn_once(
                source,
                "%s changed after it was compiled: using the pure-Python code "
                "(run scripts/bootstrap to rebuild)",
            )
            return None
    return module


_warned: set[str] = set()


def _warn_once(what: str, message: str) -> None:
    if what not in _warned:
        _warned.add(what)
        logging.getLogger(__name__).warning(message, what)


# --------------------------------------------------------------------------- levels


class LevelMap:
    """Level words to ``(name, original)``: memoised :func:`logstream.severity.from_text`.

    ``overrides`` maps upper-cased words to a severity for one format (oslo's
    ``TRACE`` is a traceback line of an ERROR record, not a trace level).
    At most ``limit`` distinct words are remembered (input text is unbounded).
    """

    def __init__(self, overrides: dict[str, Severity] | None = None, limit: int = 4096) -> None:
        self._overrides = dict(overrides or {})
        self._seen: dict[str, LevelInfo | None] = {}
        #: Words known to be levels: a hot path may look here first (a plain
        #: dict look-up) and call :meth:`get` only for the others.
        self.known: dict[str, LevelInfo] = {}
        self._limit = limit
        for severity in Severity:
            self.get(severity.name)

    def get(self, word: str) -> LevelInfo | None:
        seen = self._seen.get(word, _UNSEEN)
        if seen is not _UNSEEN:
            return seen  # type: ignore[return-value]
        severity = self._overrides.get(word.upper()) or from_text(word)
        info = (
            None if severity is None else (severity.name, None if word == severity.name else word)
        )
        if len(self._seen) < self._limit:
            self._seen[word] = info
            if info is not None:
                self.known[word] = info
        return info


_UNSEEN: Final = object()


def set_level(fields: Fields, info: LevelInfo) -> None:
    fields["level"] = info[0]
    if info[1] is not None:
        fields["level_original"] = info[1]


_WORD_STRIP: Final = "[]<>():!*-"


def leading_level(text: str, levels: LevelMap) -> LevelInfo | None:
    """The level a free-text message starts with, or ``None``.

    The first word counts when it is a level word written as one: upper case
    (``ERROR ...``), or followed by a colon or in brackets (``warning: ...``,
    ``[Warning] ...``, ``<error>``) -- so "failed to init" or "ok, done"
    state nothing.
    """
    head = text[:24].lstrip()
    if not head:
        return None
    token = head.split(None, 1)[0]
    word = token.strip(_WORD_STRIP)
    if not word or len(word) > 13 or not word.isalpha():
        return None
    if not (word.isupper() or token[-1] == ":" or token[0] in "[<("):
        return None
    return levels.get(word)


# --------------------------------------------------------------------------- text


DIGITS: Final = "0123456789"
UPPER: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Every ASCII character but the whitespace of ``\\s`` (``re.ASCII``): the
#: first character of a line starting with ``\\S``.
NOT_SPACE: Final = "".join(chr(code) for code in range(128) if not chr(code).isspace())


def is_number(text: str, max_digits: int = 18) -> bool:
    """ASCII digits only, and few enough for ``int`` to be cheap and safe."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


# --------------------------------------------------------------------------- Python tracebacks

TRACEBACK_START: Final = "Traceback (most recent call last):"
_EXCEPTION_LINE: Final = re.compile(r"[A-Za-z_][\w.]*(?::\s|:?$)")
_CHAINED: Final = (
    "During handling of the above exception",
    "The above exception was the direct cause",
)
# head["_tb"]: where a held record is in a Python traceback.
TB_NONE: Final = 0
TB_OPEN: Final = 1  # after "Traceback (most recent call last):"
TB_ENDED: Final = 2  # after the exception line; a chained traceback may follow


def traceback_continues(head: Fields, text: str, *, start_folds: bool = True) -> bool:
    """Whether ``text`` continues the Python traceback the held record shows.

    Tracks the traceback's progress in ``head["_tb"]`` (the head dict was
    already copied into the event; later changes to it stay private).
    ``Traceback (most recent call last):`` opens a traceback in the held
    record when ``start_folds`` (oslo in the journal: the record is the
    ERROR message and the traceback follows), else only when it chains onto
    a traceback that just ended.
    """
    state = head.get("_tb", TB_NONE)
    if text.startswith(TRACEBACK_START):
        if start_folds or state == TB_ENDED:
            head["_tb"] = TB_OPEN
            return True
        return False
    if state == TB_OPEN:
        if not text or text[0] in " \t":
            return True
        if _EXCEPTION_LINE.match(text):
            head["_tb"] = TB_ENDED
            return True
        return False
    if state == TB_ENDED:
        if not text or text.isspace() or text.startswith(_CHAINED):
            return True
        head["_tb"] = TB_NONE
    return False


# --------------------------------------------------------------------------- timestamps

MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_CACHE_MAX: Final = 8192
_DAY_SECS: Final = 86_400


def frac3(fraction: str | None) -> str:
    """Milliseconds from a fraction of a second's digits (``"5"`` -> ``"500"``)."""
    if not fraction:
        return "000"
    return (fraction + "00")[:3]


class Timestamps:
    """Line timestamps to Logstash's ``@timestamp``: UTC, milliseconds, ``Z``.

    Times without a zone are read in ``zone`` (default UTC). Times without a
    year get the current year (UTC, from ``clock``), or the year before when
    that would put them more than a day in the future (a December line read
    in January). Results are cached per second of input time, so a busy log
    pays for one conversion per second; a time that does not exist (month
    13, February 30) gives ``None`` and the line is not taken as parsed.
    """

    def __init__(self, clock: Clock, zone: dt.tzinfo | None = None) -> None:
        self._clock = clock
        self._zone = zone or dt.UTC
        self._utc = zone is None or zone is dt.UTC
        #: ``local`` results already computed (valid ones only): a hot path may
        #: look here first and call :meth:`local` for the others.
        self.known_local: dict[str, str] = {}
        self._local: dict[str, str | None] = {}
        self._yearless: dict[str, str | None] = {}
        self._offset: dict[str, str | None] = {}
        #: ``with_offset`` results already computed (``None`` for invalid ones): a
        #: hot path may look here first and call :meth:`with_offset` on a miss.
        self.known_offset = self._offset
        self._day = -1

    def refresh(self) -> None:
        """Called once per batch: forget year guesses when the UTC day changed."""
        day = int(self._clock.time() // _DAY_SECS)
        if day != self._day:
            self._day = day
            self._yearless.clear()

    def _utc_prefix(self, when: dt.datetime) -> str:
        if not self._utc:
            when = when.replace(tzinfo=self._zone).astimezone(dt.UTC)
        return _seconds(when)

    def local(self, text: str) -> str | None:
        """``YYYY-MM-DD HH:MM:SS`` (or ``/`` for ``-``, ``T`` for the space) in
        the configured zone -> ``YYYY-MM-DDTHH:MM:SS`` in UTC, or ``None``."""
        cache = self._local
        try:
            return cache[text]
        except KeyError:
            pass
        try:
            when = dt.datetime(
                int(text[0:4]),
                int(text[5:7]),
                int(text[8:10]),
                int(text[11:13]),
                int(text[14:16]),
                int(text[17:19]),
            )
            prefix: str | None = self._utc_prefix(when)
        except (ValueError, OverflowError):
            prefix = None
        if len(cache) >= _CACHE_MAX:
            cache.clear()
            self.known_local.clear()
        cache[text] = prefix
        if prefix is not None:
            self.known_local[text] = prefix
        return prefix

    def yearless(self, month: str, day: str, clock_time: str) -> str | None:
        """``Jun``, `` 9``, ``15:41:36`` (syslog) -> UTC prefix, or ``None``."""
        key = f"{month} {day} {clock_time}"
        cache = self._yearless
        try:
            return cache[key]
        except KeyError:
            pass
        prefix = self._guess_year(month, day, clock_time)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = prefix
        return prefix

    def _guess_year(self, month: str, day: str, clock_time: str) -> str | None:
        number = MONTHS.get(month)
        if number is None:
            return None
        now = dt.datetime.fromtimestamp(self._clock.time(), dt.UTC)
        try:
            hour, minute, second = int(clock_time[0:2]), int(clock_time[3:5]), int(clock_time[6:8])
            day_number = int(day)
        except ValueError:
            return None
        for year in range(now.year, now.year - 8, -1):  # Feb 29 needs a leap year
            try:
                when = dt.datetime(
                    year, number, day_number, hour, minute, second, tzinfo=self._zone
                )
            except ValueError:
                continue
            utc = when.astimezone(dt.UTC)
            if utc - now > dt.timedelta(days=1):
                continue
            return _seconds(utc)
        return None

    def with_offset(self, key: str, parse: Callable[[str], dt.datetime | None]) -> str | None:
        """A timestamp that carries its own zone; ``parse`` reads ``key`` into an
        aware datetime (``None`` when invalid). Cached per ``key``."""
        cache = self._offset
        try:
            return cache[key]
        except KeyError:
            pass
        try:
            when = parse(key)
        except (ValueError, OverflowError, IndexError, KeyError):
            when = None
        prefix = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=self._zone)
            try:
                prefix = _seconds(when.astimezone(dt.UTC))
            except (ValueError, OverflowError):
                prefix = None
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = prefix
        return prefix

    def iso(self, text: str) -> str | None:
        """An ISO 8601 timestamp (``2021-01-28T16:17:13.908757Z``, ``...+02:00``)
        -> ``@timestamp``; no zone means the configured zone."""
        try:
            when = dt.datetime.fromisoformat(text)
        except (ValueError, TypeError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self._zone)
        try:
            utc = when.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            return None
        return f"{_seconds(utc)}.{utc.microsecond // 1000:03d}Z"


def _seconds(when: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (always four year digits, unlike ``strftime``)."""
    return when.isoformat(timespec="seconds")[:19]
