"""Keep credentials out of everything logstream prints.

A URL may carry a password in its userinfo (``http://elastic:PASSWORD@host:9200``);
nothing logstream prints (the banner, ``check --connect``, logs, errors,
``/health``, metric labels) may show it. :func:`mask_url` masks one URL,
:func:`mask_text` every URL in a text (an exception's message from a client
library, for instance), and :class:`MaskingFilter`, installed on the handlers of
the root logger by :func:`install_log_masking`, masks every log record, so a
third-party error that embeds a URL is covered as well as our own messages.

Only the password is masked (``http://elastic:***@host:9200``): the user name
says which account is used, which helps when credentials are refused.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:password@ : the password runs to the last "@" of the authority
# (before the first "/", "?", "#", whitespace or quote), as URL parsers read it.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"<>]*:)"
    r"(?P<password>[^\s/?#'\"<>]*)@"
)


def _replace(match: re.Match[str]) -> str:
    return f"{match.group('head')}{MASK}@" if match.group("password") else match.group(0)


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    if "@" not in text:  # the common case: nothing to look for
        return text
    return _USERINFO.sub(_replace, text)


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    return mask_text(url)


class MaskingFilter(logging.Filter):
    """Masks URL passwords in a record's message, arguments and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The whole message at once: a URL may be split between the format and its arguments.
        message = record.getMessage()
        masked = mask_text(message)
        if masked is not message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:
            # Format the traceback now, masked; handlers then use exc_text as it is.
            formatter = logging.Formatter()
            record.exc_text = mask_text(formatter.formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def install_log_masking(logger: logging.Logger | None = None) -> MaskingFilter:
    """Add a :class:`MaskingFilter` to every handler of ``logger`` (the root logger by
    default): handler filters see the records of every logger, logstream's and the
    libraries' alike, which logger filters would not."""
    target = logger or logging.getLogger()
    masking = MaskingFilter()
    for handler in target.handlers:
        if not any(isinstance(existing, MaskingFilter) for existing in handler.filters):
            handler.addFilter(masking)
    return masking
