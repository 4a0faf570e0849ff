"""The compiled access-log parser (``logstream/parsers/_web_fast.pyx``) reads lines
exactly as the pure-Python ``web.AccessParser``: same fields, same types, same ``None``.

Lines come from the format's definition (common, combined, vhost_combined,
X-Forwarded-For lists, IPv6 clients, ``-`` parts, escapes, odd requests),
from random edits of those lines, from hypothesis, and from ../shared/corpus
when it is there. See ``tests/support/speedups.py``. The common lines (the
corpus's access log, the benchmark's lines) must take the compiled path,
not the Python fallback.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.parsers import web
from logstream.parsers.common import Parser, compiled
from tests.support.speedups import CORPUS, assert_same, corpus_lines, mutants, parser_pair

ACCESS_LOG = CORPUS / "apache-access-combined-elastic-examples.log"


def pair(monkeypatch: pytest.MonkeyPatch) -> tuple[Parser, Parser]:
    """(pure-Python, compiled) apache_access parsers; skips when not built."""
    if compiled("_web_fast") is None:
        pytest.skip("logstream.parsers._web_fast is not built (or LOGSTREAM_PURE is set)")
    return parser_pair(web.ACCESS, monkeypatch)


def test_the_compiled_access_parser_is_built_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("LOGSTREAM_PURE", "0") not in ("", "0"):
        pytest.skip("LOGSTREAM_PURE is set")
    assert compiled("_web_fast") is not None, "_web_fast is not built: run scripts/bootstrap"
    pure, fast = pair(monkeypatch)
    assert getattr(pure.parse, "__func__", None) is web.AccessParser.parse
    assert type(getattr(fast.parse, "__self__", None)).__module__ == "logstream.parsers._web_fast"


# --------------------------------------------------------------------------- generated lines

_CLIENTS = [
    "10.0.0.7",
    "2001:db8::1",
    "::1",
    "::ffff:10.0.0.7",
    "10.0.0.7:5678",
    "vh:80",
    "vh:80,",
    "a:b:c,d",
    ":",
    "www.example.com:443 10.0.0.7",  # vhost_combined
    "www.example.com:99999 10.0.0.7",
    "203.0.113.9, 10.0.0.1",  # X-Forwarded-For
    "203.0.113.9, 10.0.0.1, 10.0.0.2",
    "203.0.113.9,",
    "203.0.113.9,, 10.0.0.1",
    "203.0.113.9, , 10.0.0.1",
    "203.0.113.9, 10.0.0.1,",
    "203.0.113.9 ,10.0.0.1",
    "2001:db8::1, 10.0.0.1",
    "vh:80 203.0.113.9, 10.0.0.1",
    ",",
    ", ,",
    "a,\u00a0, b",
    "host-\u00e9.example",
    "a[b]",
]
_IDENTS = ["-", "ident", "x\u3000y"]
_USERS = ["-", "alice", "a[b", "\u00e9l\u00e8ve", "--"]
_STAMPS = [
    "[17/May/2015:10:05:03 +0200]",
    "[17/May/2015:10:05:03 +0000]",
    "[01/Jan/1970:00:00:00 -1230]",
    "[31/Feb/2015:10:05:03 +0000]",  # no such day
    "[17/Foo/2015:10:05:03 +0000]",  # no such month
    "[17/May/2015:25:05:03 +0000]",
    "[17/May/2015:10:05:03 +9999]",
    "[17/May/0000:10:05:03 +0000]",
    "[17/may/2015:10:05:03 +0000]",
    "[17/May/2015:10:05:03]",
    "[7/May/2015:10:05:03 +0000]",
]
_REQUESTS = [
    '"GET /a?b=1 HTTP/1.1"',
    '"GET /index.html HTTP/1.0"',
    '"POST /a b c HTTP/2.0"',
    '"GET /a"',
    '"GET /a HTTX/1.1"',
    '"GET  HTTP/1.1"',
    '"GET "',
    '" "',
    '"-"',
    '""',
    '"\\x16\\x03\\x01\\x00\\xa5\\x01"',  # TLS handshake on a plain port, escaped
    '"GET /a\\"b HTTP/1.1"',  # an escaped quote
    '"GET /caf\u00e9 HTTP/1.1"',
    '"GET /a\tb HTTP/1.1"',
    '"garbage\nline"',
]
_STATUSES = ["200", "404", "500", "304", "099", "000", "999", "-", "20", "2000", "abc"]
_SIZES = ["512", "0", "-", "123456789012345678", "1234567890123456789", "", "5x"]
_TAILS = [
    ' "https://ref.example/" "curl/8.0"',
    ' "-" "-"',
    ' "" ""',
    ' "-" "Mozilla/5.0 (X11; Linux x86_64)"',
    ' "https://ref.example/" "curl/8.0" "-" 0.003',  # nginx extras
    ' "https://ref.example/" "curl/8.0" rt=0.1',
    ' "https://ref.example/"',
    ' "https://ref.example/" "curl',
    ' "a\\"b" "c\\\\"',  # escapes in the quoted parts
    ' "a" "b\\"c" "d"',
    ' "a"x"b"',
    "",
    " ",
    " extra",
    '"x" "y"',
]


def _line(parts: tuple[str, ...]) -> str:
    client, ident, user, stamp, request, status, size, tail = parts
    return f"{client} {ident} {user} {stamp} {request} {status} {size}{tail}"


def access_lines() -> list[str]:
    lines = [
        _line(parts)
        for parts in itertools.product(
            _CLIENTS[:2], _IDENTS[:1], _USERS[:2], _STAMPS[:2], _REQUESTS[:5],
            _STATUSES[:4], _SIZES[:3], _TAILS[:6],
        )
    ]  # fmt: skip
    # Every other value once, on an otherwise plain line.
    base = (
        "10.0.0.7",
        "-",
        "alice",
        _STAMPS[0],
        _REQUESTS[0],
        "404",
        "512",
        _TAILS[0],
    )
    values = (_CLIENTS, _IDENTS, _USERS, _STAMPS, _REQUESTS, _STATUSES, _SIZES, _TAILS)
    for index, options in enumerate(values):
        for value in options:
            parts = list(base)
            parts[index] = value
            lines.append(_line(tuple(parts)))
    # Lines the access parser must refuse (or never see from detection).
    lines += [
        "",
        " ",
        "-",
        "10.0.0.7",
        "10.0.0.7 - - ",
        "10.0.0.7 - - [",
        "2013-09-27 18:22:35.392 6602 AUDIT cinder.api [-] Loaded extension: os-hosts",
        "[Sun Dec 04 04:47:44 2005] [error] [client 10.0.0.7] File does not exist: /x",
        ' [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5',
        'x [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5',
        'x y [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5',
        'a b c d [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5',
        'a  b c [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5',
        'a\tb c [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5',
    ]
    return lines


def test_access_generated_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = pair(monkeypatch)
    lines = access_lines()
    assert assert_same(pure, fast, lines) > len(lines) // 2


def test_access_edited_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = pair(monkeypatch)
    lines = mutants(access_lines(), 40_000)
    assert assert_same(pure, fast, lines) > 5000


def test_access_corpus_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every corpus file (the other formats' lines must be refused alike) and edits."""
    lines = corpus_lines()
    if not lines:
        pytest.skip("no ../shared/corpus")
    pure, fast = pair(monkeypatch)
    assert assert_same(pure, fast, lines + mutants(lines, 20_000)) > 2900


_WORDS = ["a,", "b", ",", "c,", "::1", "h:80", "-", "u,", "x,y"]
_AFTER_WORDS = [
    '[17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5 "r" "a"',
    # a second time in the request: where _ACCESS could take a longer client
    '[17/May/2015:10:05:03 +0200] "x [18/May/2015:10:05:03 +0200] " 200 5 "GET" 404 7',
    '[17/May/2015:10:05:03 +0200] "x" 200 5 "y [18/May/2015:10:05:03 +0200] "GET" 404 7',
]


def test_access_every_head_of_up_to_four_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client lists, vhosts, IPv6 and commas in every position before the time."""
    pure, fast = pair(monkeypatch)
    lines = [
        " ".join(words) + " " + after
        for count in range(1, 5)
        for words in itertools.product(_WORDS, repeat=count)
        for after in _AFTER_WORDS
    ]
    assert assert_same(pure, fast, lines) > 1000


# --------------------------------------------------------------------------- the fast path is taken


def _benchmark_lines(count: int) -> list[str]:
    path = Path(__file__).parents[1] / "benchmarks" / "parse.py"
    spec = importlib.util.spec_from_file_location("_parse_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [module.apache_access(n) for n in range(count)]


def test_common_lines_take_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus's access log and the benchmark's lines never reach the Python code."""
    if compiled("_web_fast") is None:
        pytest.skip("logstream.parsers._web_fast is not built (or LOGSTREAM_PURE is set)")
    pure, _ = pair(monkeypatch)
    fallbacks: list[str] = []

    def general(self: web.AccessParser, line: str) -> Any:
        fallbacks.append(line)
        return web.AccessParser._general(self, line)

    with monkeypatch.context() as patch:
        patch.setattr(web.AccessParser, "_general", general)
        fast = web.AccessParser(pure._stamps)  # type: ignore[attr-defined]
    lines = _benchmark_lines(5000)
    if ACCESS_LOG.is_file():
        lines += ACCESS_LOG.read_text(encoding="utf-8", errors="replace").splitlines()
    assert assert_same(pure, fast, lines) == len(lines)
    assert fallbacks == []
    # So do IPv6 clients and X-Forwarded-For lists; vhost_combined and
    # backslash escapes go there (the spy is in place).
    assert fast.parse('::1 - - [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5', {})
    assert fast.parse('a, ::1 - - [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5', {})
    assert fallbacks == []
    fast.parse('vh:80 ::1 - - [17/May/2015:10:05:03 +0200] "GET / HTTP/1.1" 200 5', {})
    fast.parse('::1 - - [17/May/2015:10:05:03 +0200] "GET /\\" HTTP/1.1" 200 5', {})
    assert len(fallbacks) == 2


# --------------------------------------------------------------------------- any text

_FRAGMENTS = st.sampled_from(
    [
        "10.0.0.7",
        "::1",
        "vh:80",
        ", ",
        " ",
        "-",
        "alice",
        "[17/May/2015:10:05:03 +0200]",
        "[",
        "]",
        '"',
        '" "',
        "\\",
        '\\"',
        "GET /a HTTP/1.1",
        "HTTP/",
        "200",
        "404",
        "512",
        "12345678901234567890",
        "\t",
        "\n",
        "\u00e9",
        "\u3000",
    ]
)
_HEAD = "10.0.0.7 - - [17/May/2015:10:05:03 +0200] "


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=3)), max_size=16))
def test_access_any_text(parts: list[str]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pure, fast = pair(monkeypatch)
    line = "".join(parts)
    assert_same(
        pure,
        fast,
        [
            line,
            _HEAD + line,
            _HEAD + '"GET / HTTP/1.1" ' + line,
            _HEAD + '"GET / HTTP/1.1" 200 ' + line,
            _HEAD + '"GET / HTTP/1.1" 200 5 "' + line,
            _HEAD + '"GET / HTTP/1.1" 200 5 "-" "' + line,
        ],
    )


# --------------------------------------------------------------------------- nginx error log

_NGINX_STAMPS = ["2016/09/01 12:00:00", "2016/02/30 12:00:00", "2016-09-01 12:00:00", "2016/09/01"]
_NGINX_LEVELS = [
    "error",
    "warn",
    "crit",
    "emerg",
    "debug",
    "notice",
    "info",
    "alert",
    "foo",
    "ERROR",
    "abcdefghi",
    "",
]
_NGINX_IDS = [
    "1234#5678",
    "1#0",
    "1234567890#1",
    "12345678901#1",
    "1#12345678901234567890",
    "1#123456789012345678901",
    "#1",
    "1#",
    "1 #2",
]
_NGINX_MESSAGES = [
    ": *1 open() failed, client: 10.0.0.7",
    ': *1 open() "/x" failed (2: No such file), client: 10.0.0.7, server: a, request: "GET / "',
    ": client: 10.0.0.7",
    ": , client: ",
    ": ",
    ":",
    ": multi\nline, client: \u00e9, x",
    "",
]


def nginx_lines() -> list[str]:
    lines = [
        f"{stamp} [{level}] {ids}{message}"
        for stamp, level, ids, message in itertools.product(
            _NGINX_STAMPS[:2], _NGINX_LEVELS[:6], _NGINX_IDS[:3], _NGINX_MESSAGES
        )
    ]
    for stamp, level, ids in itertools.product(_NGINX_STAMPS, _NGINX_LEVELS, _NGINX_IDS):
        lines.append(f"{stamp} [{level}] {ids}{_NGINX_MESSAGES[0]}")
    return lines


def nginx_pair(monkeypatch: pytest.MonkeyPatch) -> tuple[Parser, Parser]:
    pure, fast = pair(monkeypatch)
    del pure, fast
    return parser_pair(web.NGINX_ERROR, monkeypatch)


def test_nginx_error_uses_the_compiled_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = nginx_pair(monkeypatch)
    assert getattr(pure.parse, "__func__", None) is web.NginxErrorParser.parse
    assert type(getattr(fast.parse, "__self__", None)).__name__ == "NginxError"


def test_nginx_error_generated_and_edited_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = nginx_pair(monkeypatch)
    lines = nginx_lines()
    assert assert_same(pure, fast, lines) > 100
    assert assert_same(pure, fast, mutants(lines, 30_000)) > 1000
    corpus = corpus_lines()
    assert_same(pure, fast, corpus + mutants(corpus, 5000) if corpus else [])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=3)), max_size=12))
def test_nginx_error_any_text(parts: list[str]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pure, fast = nginx_pair(monkeypatch)
    line = "".join(parts)
    assert_same(
        pure,
        fast,
        [
            line,
            "2016/09/01 12:00:00 [" + line,
            "2016/09/01 12:00:00 [error] " + line,
            "2016/09/01 12:00:00 [error] 1#2: " + line,
            "2016/09/01 12:00:00 [error] 1#2: x, client: " + line,
        ],
    )


# --------------------------------------------------------------------------- apache error log

_APACHE_STAMPS = [
    "[Sun Dec 04 04:47:44 2005]",
    "[Wed Oct 11 14:32:52.123456 2000]",
    "[Wed Oct  1 14:32:52 2000]",
    "[Wed Oct 1 14:32:52 2000]",
    "[Wed Oct 11 14:32:52.1 2000]",
    "[Wed Oct 11 14:32:52.1234567891 2000]",
    "[Wed Oct 11 14:32:52. 2000]",
    "[Wed Foo 11 14:32:52 2000]",
    "[Wed Feb 30 14:32:52 2000]",
    "[Wed Oct 111 14:32:52 2000]",
    "[Wed Oct  11 14:32:52 2000]",
    "[W_d O1t 11 14:32:52 2000]",
]
_APACHE_LEVELS = [
    "[error]",
    "[core:error]",
    "[:error]",
    "[proxy_http.x-y:warn]",
    "[mpm:trace8]",
    "[notice]",
    "[debug]",
    "[crit1]",
    "[error12]",
    "[abcdefghi]",
    "[ERROR]",
    "[a:b:error]",
    "[" + "m" * 64 + ":error]",
    "[" + "m" * 65 + ":error]",
    "[]",
]
_APACHE_PIDS = [
    "",
    "[pid 35708] ",
    "[pid 35708:tid 4328636416] ",
    "[pid 1:tid 123456789012345678901] ",
    "[pid 12345678901] ",
    "[pid 1:tid x] ",
    "[pid 1]",
    "[pid ] ",
]
_APACHE_SOURCES = [
    "",
    "proxy_util.c(2020): ",
    "mod_ssl.h(1): ",
    "a.c(2020): ",
    ".c(1): ",
    "x" * 64 + ".c(1): ",
    "x" * 65 + ".c(1): ",
    "util.cc(3): ",
    "a.c(1234567890): ",
    "a.c(12):",
]
_APACHE_APRS = [
    "",
    "(13)Permission denied: ",
    "(-3)x: ",
    "(70007)The timeout specified has expired: ",
    "(1234567890)x: ",
    "(1)a[b]: ",
    "(1)" + "y" * 200 + ": ",
    "(1)" + "y" * 201 + ": ",
    "(1): ",
    "(x)y: ",
    "(1)a:b: ",
]
_APACHE_CLIENTS = [
    "",
    "[client 10.0.0.7] ",
    "[client 10.0.0.7:5678] ",
    "[client ::1:40] ",
    "[client ] ",
    "[client " + "c" * 300 + "] ",
    "[client " + "c" * 301 + "] ",
    "[client a]b] ",
]
_APACHE_CODES = ["", "AH00124: ", "AH0012: ", "AH001245: ", "AH00124:"]
_APACHE_MESSAGES = [
    "File does not exist: /var/www/x",
    "PHP Warning: x in /a.php on line 2, referer: http://h/p",
    "x, referer: http://h/p q",
    "x, referer:  \u3000http://h/p\t",
    "x, referer",
    "x, referer:",
    "multi\nline",
    "",
    "\u00e9t\u00e9",
]


def apache_error_lines() -> list[str]:
    lines = [
        " ".join([stamp, level]) + " " + pid + source + apr + client + code + message
        for stamp, level, pid, source, apr, client, code, message in itertools.product(
            _APACHE_STAMPS[:2], _APACHE_LEVELS[:2], _APACHE_PIDS[:3], _APACHE_SOURCES[:2],
            _APACHE_APRS[:2], _APACHE_CLIENTS[:2], _APACHE_CODES[:2], _APACHE_MESSAGES[:3],
        )
    ]  # fmt: skip
    base = [
        _APACHE_STAMPS[0], _APACHE_LEVELS[1], _APACHE_PIDS[2], _APACHE_SOURCES[1],
        _APACHE_APRS[1], _APACHE_CLIENTS[2], _APACHE_CODES[1], _APACHE_MESSAGES[1],
    ]  # fmt: skip
    values = (_APACHE_STAMPS, _APACHE_LEVELS, _APACHE_PIDS, _APACHE_SOURCES, _APACHE_APRS,
              _APACHE_CLIENTS, _APACHE_CODES, _APACHE_MESSAGES)  # fmt: skip
    for index, options in enumerate(values):
        for value in options:
            parts = list(base)
            parts[index] = value
            lines.append(" ".join(parts[:2]) + " " + "".join(parts[2:]))
    return lines


def apache_error_pair(monkeypatch: pytest.MonkeyPatch) -> tuple[Parser, Parser]:
    pure, fast = pair(monkeypatch)
    del pure, fast
    return parser_pair(web.APACHE_ERROR, monkeypatch)


def test_apache_error_uses_the_compiled_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = apache_error_pair(monkeypatch)
    assert getattr(pure.parse, "__func__", None) is web.ApacheErrorParser.parse
    assert type(getattr(fast.parse, "__self__", None)).__name__ == "ApacheError"


def test_apache_error_generated_and_edited_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = apache_error_pair(monkeypatch)
    lines = apache_error_lines()
    assert assert_same(pure, fast, lines) > len(lines) // 2
    assert assert_same(pure, fast, mutants(lines, 40_000)) > 5000
    corpus = corpus_lines()
    assert_same(pure, fast, corpus + mutants(corpus, 5000) if corpus else [])


_ERROR_FRAGMENTS = st.sampled_from(
    [
        "[",
        "]",
        " ",
        ":",
        "(",
        ")",
        ": ",
        "] ",
        "[pid ",
        ":tid ",
        "[client ",
        "AH",
        "12345",
        "a.c",
        "error",
        "-",
        "1",
        ", referer",
        "\n",
        "\u00e9",
        "\t",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_ERROR_FRAGMENTS, st.text(max_size=3)), max_size=14))
def test_apache_error_any_text(parts: list[str]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pure, fast = apache_error_pair(monkeypatch)
    line = "".join(parts)
    assert_same(
        pure,
        fast,
        [
            line,
            "[Wed Oct 11 14:32:52" + line,
            "[Wed Oct 11 14:32:52 2000] [" + line,
            "[Wed Oct 11 14:32:52 2000] [core:error] " + line,
            "[Wed Oct 11 14:32:52 2000] [error] [pid 1" + line,
            "[Wed Oct 11 14:32:52 2000] [error] [pid 1:tid 2] " + line,
            "[Wed Oct 11 14:32:52 2000] [error] [pid 1] a.c(1): " + line,
            "[Wed Oct 11 14:32:52 2000] [error] (1)" + line,
            "[Wed Oct 11 14:32:52 2000] [error] [client " + line,
        ],
    )


# --------------------------------------------------------------------------- odd characters

# A lone surrogate, an astral character, NUL, Arabic-Indic and fullwidth digits
# (int() takes them, the regexes' ASCII \d does not), no-break space and \x1c
# (whitespace to str.split/strip, not to \s), a line separator.
_ODD = ["\ud800", "\U0001f600", "\x00", "\u0660", "\uff11", "\u00a0", "\x1c", "\u2028"]


def _odd_edits(lines: list[str], count: int) -> list[str]:
    rnd = random.Random(5)  # noqa: S311 (test data)
    out = []
    for _ in range(count):
        chars = list(rnd.choice(lines))
        for _ in range(rnd.randint(1, 2)):
            pos = rnd.randrange(len(chars) + 1)
            if rnd.random() < 0.5 and chars:
                chars[min(pos, len(chars) - 1)] = rnd.choice(_ODD)
            else:
                chars.insert(pos, rnd.choice(_ODD))
        out.append("".join(chars))
    return out


def test_odd_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    pair(monkeypatch)
    for name, lines in (
        (web.ACCESS, access_lines()),
        (web.APACHE_ERROR, apache_error_lines()),
        (web.NGINX_ERROR, nginx_lines()),
    ):
        pure, fast = parser_pair(name, monkeypatch)
        assert assert_same(pure, fast, _odd_edits(lines, 15_000)) > 500
