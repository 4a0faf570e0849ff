"""Malformed HTTP requests: counted, and logged at most once per interval.

A port open to a network gets scanners, TLS clients on a plain port, broken
proxies. aiohttp answers each malformed request with 400 and logs it with a
traceback (``aiohttp.server``, one per request); a flood of them buried
everything else in the log. The http input and the monitor pass
:func:`request_error_logger` to aiohttp instead: a malformed request (any
:class:`aiohttp.http_exceptions.HttpProcessingError`) is counted in
``logstream_requests_refused_total{status}`` and
``logstream_protocol_errors_total{reason="malformed_request"}`` of the unit,
and logged as one line at most every ``interval_secs``, saying how many came
since the last line and what the last one was. Any other error (a bug in a
handler) is logged as aiohttp would, traceback included.

:class:`ThrottledLog` is the helper behind it, usable for any noisy message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from logstream.metrics import UnitMetrics

MALFORMED = "malformed_request"
DEFAULT_INTERVAL_SECS = 10.0


class ThrottledLog:
    """At most one log line per ``interval_secs``; the next line says how many
    occurrences the quiet time swallowed.

    ``note(text)`` counts one occurrence and logs ``text`` (with the count since
    the last line) only when the interval since the last line has passed.
    ``flush()`` logs what is still untold (at stop).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_secs: float = DEFAULT_INTERVAL_SECS,
        *,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_secs = interval_secs
        self.level = level
        self._clock = clock
        self._next = float("-inf")
        self._untold = 0
        self._last = ""
        self.lines = 0  # lines written, for tests and the curious

    def note(self, text: str) -> bool:
        """Count one occurrence; True when this call wrote a line."""
        self._untold += 1
        self._last = text
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self.interval_secs
        self._write()
        return True

    def flush(self) -> None:
        if self._untold:
            self._write()

    def _write(self) -> None:
        count, self._untold = self._untold, 0
        if count == 1:
            self.logger.log(self.level, "%s", self._last)
        else:
            self.logger.log(self.level, "%s (%d such since the last line)", self._last, count)
        self.lines += 1


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    return None


def describe(error: HttpProcessingError) -> str:
    """The first line of aiohttp's message (it adds the raw bytes and a caret below)."""
    message = str(getattr(error, "message", "") or "").strip()
    first = message.splitlines()[0].rstrip(": ") if message else ""
    return first or type(error).__name__


class RequestErrorLog(logging.Logger):
    """What aiohttp's request handler logs through (its ``logger`` argument).

    A record carrying a malformed-request error is counted on ``metrics()`` and
    goes to a :class:`ThrottledLog`; every other record goes to the logger
    aiohttp would have used, unchanged.
    """

    def __init__(
        self,
        unit: str,
        metrics: Callable[[], UnitMetrics],
        interval_secs: float = DEFAULT_INTERVAL_SECS,
        target: logging.Logger | None = None,
    ) -> None:
        super().__init__(f"logstream.requests.{unit}")
        self.unit = unit
        self._metrics = metrics
        self.target = target or logging.getLogger("aiohttp.server")
        self.throttled = ThrottledLog(logging.getLogger("logstream.requests"), interval_secs)

    def malformed(self, error: HttpProcessingError, remote: object = None) -> None:
        """Count one malformed request and maybe log a line about it."""
        metrics = self._metrics()
        status = error.code if 400 <= error.code < 600 else 400
        metrics.refused[status] += 1
        metrics.protocol_errors[MALFORMED] += 1
        source = f" from {remote}" if remote else ""
        self.throttled.note(
            f"{self.unit}: malformed HTTP request{source} refused with {status}: {describe(error)}"
        )

    def _log(
        self,
        level: int,
        msg: object,
        args: Any,
        exc_info: Any = None,
        extra: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
    ) -> None:
        error = _exception(exc_info)
        if isinstance(error, HttpProcessingError):
            remote = args[0] if isinstance(args, tuple) and args else None
            self.malformed(error, remote)
            return
        if self.target.isEnabledFor(level):
            self.target.log(
                level,
                msg,
                *(args if isinstance(args, tuple) else (args,)),
                exc_info=exc_info,
                extra=extra,
                stack_info=stack_info,
            )

    def isEnabledFor(self, level: int) -> bool:
        # Malformed requests come as DEBUG records too (a first bad request line):
        # they must reach _log to be counted, whatever the level.
        return True


def request_error_logger(
    unit: str,
    metrics: Callable[[], UnitMetrics],
    interval_secs: float = DEFAULT_INTERVAL_SECS,
) -> RequestErrorLog:
    """The ``logger`` to give ``aiohttp.web.AppRunner`` for unit ``unit``."""
    return RequestErrorLog(unit, metrics, interval_secs)


__all__ = [
    "MALFORMED",
    "RequestErrorLog",
    "ThrottledLog",
    "describe",
    "request_error_logger",
]
