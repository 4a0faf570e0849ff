"""One ordered severity scale for every log format.

    TRACE < DEBUG < INFO < NOTICE < WARNING < ERROR < CRITICAL

Each format's own levels map onto it (:func:`from_text`, :func:`from_syslog`,
:func:`from_http_status`, :func:`from_python`). Events carry the normalised
name in ``level`` (and the source's own text in ``level_original`` when it
differed), so conditions such as ``level >= WARNING`` and per-level sampling
work the same whatever produced the line.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class Severity(IntEnum):
    TRACE = 5
    DEBUG = 10
    INFO = 20
    NOTICE = 25
    WARNING = 30
    ERROR = 40
    CRITICAL = 50


NAMES: Final = tuple(s.name for s in Severity)

# Spellings seen in the wild (upper-cased) -> severity.
_ALIASES: Final[dict[str, Severity]] = {
    "TRACE": Severity.TRACE,
    "TRC": Severity.TRACE,
    "FINEST": Severity.TRACE,
    "VERBOSE": Severity.DEBUG,
    "DEBUG": Severity.DEBUG,
    "DBG": Severity.DEBUG,
    "FINE": Severity.DEBUG,
    "FINER": Severity.TRACE,
    "INFO": Severity.INFO,
    "INFORMATION": Severity.INFO,
    "INFORMATIONAL": Severity.INFO,
    "INF": Severity.INFO,
    "OK": Severity.INFO,
    "NOTICE": Severity.NOTICE,
    "AUDIT": Severity.NOTICE,  # oslo.log's AUDIT sits between INFO and WARNING
    "WARNING": Severity.WARNING,
    "WARN": Severity.WARNING,
    "WRN": Severity.WARNING,
    "ERROR": Severity.ERROR,
    "ERR": Severity.ERROR,
    "SEVERE": Severity.ERROR,
    "FAIL": Severity.ERROR,
    "FAILED": Severity.ERROR,
    "CRITICAL": Severity.CRITICAL,
    "CRIT": Severity.CRITICAL,
    "FATAL": Severity.CRITICAL,
    "ALERT": Severity.CRITICAL,
    "EMERG": Severity.CRITICAL,
    "EMERGENCY": Severity.CRITICAL,
    "PANIC": Severity.CRITICAL,
}

# syslog severity 0-7 (RFC 5424 section 6.2.1).
_SYSLOG: Final = (
    Severity.CRITICAL,  # 0 emergency
    Severity.CRITICAL,  # 1 alert
    Severity.CRITICAL,  # 2 critical
    Severity.ERROR,  # 3 error
    Severity.WARNING,  # 4 warning
    Severity.NOTICE,  # 5 notice
    Severity.INFO,  # 6 informational
    Severity.DEBUG,  # 7 debug
)


def from_text(text: object) -> Severity | None:
    """The severity a level name stands for (any case, common aliases), else ``None``."""
    if isinstance(text, str):
        return _ALIASES.get(text.strip().upper())
    if isinstance(text, int) and not isinstance(text, bool):
        return from_python(text)
    return None


def from_syslog(severity: int) -> Severity:
    """syslog severity 0 (emergency) .. 7 (debug); out-of-range values clamp."""
    return _SYSLOG[min(max(severity, 0), 7)]


def from_python(levelno: int) -> Severity:
    """A Python ``logging`` level number."""
    if levelno >= 50:
        return Severity.CRITICAL
    if levelno >= 40:
        return Severity.ERROR
    if levelno >= 30:
        return Severity.WARNING
    if levelno >= 20:
        return Severity.INFO
    if levelno >= 10:
        return Severity.DEBUG
    return Severity.TRACE


def from_http_status(status: int) -> Severity:
    """5xx is an error, 4xx a warning, anything else informational."""
    if status >= 500:
        return Severity.ERROR
    if status >= 400:
        return Severity.WARNING
    return Severity.INFO


def parse_name(name: str) -> Severity:
    """A severity named in a config (``"warning"``, ``"WARN"``). Raises ``ValueError``."""
    severity = from_text(name)
    if severity is None:
        raise ValueError(f"unknown severity {name!r}; use one of {', '.join(NAMES)}")
    return severity
