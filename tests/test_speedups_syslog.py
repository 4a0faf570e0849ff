"""The compiled syslog/journal parser (``logstream/parsers/_syslog_fast.pyx``) reads
lines exactly as ``syslog.SyslogParser`` in pure Python: same fields, same types,
same ``None``.

Lines come from the formats' definitions (RFC 3164 with and without ``<PRI>``,
with and without a year, rsyslog's RFC 3339 times, journalctl's short-precise
and short-iso outputs, tags with colons and ``[pid]``, no hostname, no message,
oslo bodies, level words, the journal's ``-- ... --`` lines), random edits of
them, hypothesis text, the benchmark's lines and ../shared/corpus when it is
there. See ``tests/support/speedups.py``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.clock import ManualClock
from logstream.parsers import build_parsers, common, oslo, syslog
from logstream.parsers.common import Parser, compiled
from tests.support.speedups import CORPUS, assert_same, corpus_lines, mutants, parser_pair

FORMATS = ("syslog", "journal")


def pair(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Parser, Parser]:
    """(pure, compiled) ``name`` parsers; skips when ``_syslog_fast`` is not built."""
    if compiled("_syslog_fast") is None:
        pytest.skip("logstream.parsers._syslog_fast is not built (or LOGSTREAM_PURE is set)")
    pure, fast = parser_pair(name, monkeypatch)
    assert type(getattr(fast.parse, "__self__", None)).__module__.endswith("_syslog_fast")
    return pure, fast


def same(pure: Parser, fast: Parser, lines: Iterable[str]) -> int:
    """:func:`assert_same`, and the fields in the same order (neither parser may
    raise: parsers never raise on any text)."""
    readable = list(lines)
    accepted = assert_same(pure, fast, readable)
    for line in readable:  # and in the same order (the order events are written in)
        want = pure.parse(line, {"message": line})
        assert list(fast.parse(line, {"message": line}) or ()) == list(want or ()), line
    return accepted


def test_the_syslog_fast_path_is_built_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("LOGSTREAM_PURE", "0") not in ("", "0"):
        pytest.skip("LOGSTREAM_PURE is set")
    assert compiled("_syslog_fast") is not None, "_syslog_fast is not built: run scripts/bootstrap"
    for name in FORMATS:
        pure, _ = pair(name, monkeypatch)
        assert getattr(pure.parse, "__func__", None) is syslog.SyslogParser.parse


# --------------------------------------------------------------------------- generated lines

_PRIS = ["", "<30>", "<0>", "<191>", "<192>", "<7", "<1234>", "<a>"]
_STAMPS = [
    "Jun  9 15:41:36",  # RFC 3164, space-padded day
    "Mar 28 12:20:44.172534",  # journalctl short-precise
    "2017-03-28T12:20:44.172534+0000",  # journalctl short-iso-precise
    "2018-08-14T14:30:02+0200",  # journalctl short-iso
    "Apr 4 03:39:57",  # no padding
    "Apr 14 03:39:57",
    "Apr 04 03:39:57",
    "Jun  9 2021 15:41:36",  # with a year
    "Jun  9 2021 15:41:36.25",
    "Feb 29 2021 10:00:00",  # no such day
    "Feb 29 10:00:00",  # a leap day: some year before
    "Dec 31 23:59:59",
    "Jun 31 10:00:00",
    "Foo 12 10:00:00",
    "Mar 28 12:20:44.1",
    "Mar 28 12:20:44.123456789",
    "Mar 28 12:20:44.1234567890",
    "Mar 28 12:20:44.",
    "Mar 28 25:20:44.5",
    "Mar   8 12:20:44",
    "Mar 128 12:20:44",
    "mar 28 12:20:44",
    "Mar 28 12:20:4",
    "Mar 28 12:20:44Z",
    "2018-08-14T14:30:02.203151+02:00",  # rsyslog RFC 3339
    "2018-08-14T14:30:02Z",
    "2018-08-14T14:30:02.5Z",
    "2018-08-14T14:30:02",  # no zone: the configured one
    "2018-08-14T14:30:02.123",
    "2018-08-14T14:30:02-0530",
    "2018-08-14T14:30:02+02:0",
    "2018-08-14T14:30:02+2",
    "2018-08-14T14:30:02+02000",
    "2018-02-30T14:30:02+0200",
    "2018-08-14T24:30:02",
    "2018-08-14 14:30:02",
    "2018-08-14T14:30:02.1234567890+0000",
]
_HEADS = [  # what follows the time: " host tag..." or no host
    " node-1 ",
    " ",
    "  ",
    " node-1",
    " node-1\t",
    " host: ",
    " ho[st]: ",
    " \u00e9h ",
]
_TAGS = [
    "sshd[1234]: ",
    "CRON: ",
    "app:worker[7]: ",
    "postfix/smtpd[88]: ",
    "svc[main]: ",
    "cinder-api[8526]: ",
    "kernel: ",
    "",
    "tag:",
    "tag[1]:",
    "tag[1]:x ",
    "tag[]: ",
    "tag[a b]: ",
    "[x]: ",
    ":: ",
    "a: b[1]: ",
    "a:b: ",
    "t[1]x: ",
    "t" * 128 + ": ",
    "t" * 129 + ": ",
    "t[" + "1" * 128 + "]: ",
    "t[" + "1" * 129 + "]: ",
    "t[1234567890]: ",
    "t[12345678901]: ",
    "t[007]: ",
    "t[\u0661]: ",
    "\u00e9[1]: ",
    "tag[1][2]: ",
    "tag\t: ",
]
_MESSAGES = [
    "Accepted key",
    "",
    "ERROR something broke",
    "warning: disk almost full",
    "[Warning] x",
    "<error> y",
    "(crit) z",
    "failed to init",
    "ok, done",
    "INFO cinder.api [req-1 u p] slow",
    "WARNING oslo_reports.guru_meditation_report [-] Guru meditation now registers",
    'DEBUG oslo_concurrency.lockutils [-] Acquired "x" from (pid=8526) lock /usr/l.py:212',
    "DEBUG cinder.api [req-1 None None] GET run /opt/x.py:12",
    "INFO nova [req-a req-b u1 p1 - default default] [instance: 7d1f] Booted",
    "TRACE cinder.api Traceback (most recent call last):",
    "WARNING cinder.api no context",
    "INFO a [b]c",
    "INFO a [b",
    "INFO [a] b",
    "INFO  a",
    "INFO a\tb",
    "FOO x [y] z",
    "ERROR",
    "ERROR ",
    "\x1b[31mERROR\x1b[0m red",
    "\x1b[0;32mINFO cinder.api [-] green\x1b[0m",
    "ERROR: \u00e9t\u00e9",
    "\u00e9ERROR x",
    "  ERROR spaced",
    "\x1cERROR sep",
    "\u3000ERROR wide space",
    "Warning: x",
    "WARNINGWARNINGS x",
    "CRITICAL: x",
    "[-] x",
    "E1 x",
    "multi\nline message",
    "trailing 12",
]


def syslog_lines() -> list[str]:
    """Every value of each part on an otherwise common line, and the common
    parts in every combination."""
    parts = (_PRIS, _STAMPS, _HEADS, _TAGS, _MESSAGES)
    lines = [
        "".join(values)
        for values in itertools.product(
            _PRIS[:2], _STAMPS[:4], _HEADS[:4], _TAGS[:8], _MESSAGES[:16]
        )
    ]
    base = ("", "Mar 28 12:20:44.172534", " node-1 ", "cinder-api[8526]: ", _MESSAGES[9])
    for index, values in enumerate(parts):
        for value in values:
            line = list(base)
            line[index] = value
            lines.append("".join(line))
    for stamp, tag, message in itertools.product(_STAMPS, _TAGS, _MESSAGES[:3]):
        lines.append(f"{stamp} node-1 {tag}{message}")
    for head, tag in itertools.product(_HEADS, _TAGS):
        lines.append(f"<13>Jun  9 15:41:36{head}{tag}x")
    return lines


_META = [
    "-- Logs begin at Tue 2017-03-28 12:02:58 UTC, end at Tue 2017-03-28 13:16:45 UTC. --",
    "-- Logs begin at Tue 2017-03-28 12:02:58 CET, end at Tue 2017-03-28 13:16:45 CET. --",
    "-- Logs begin at Tue 2017-13-28 12:02:58 UTC, end at x. --",
    "-- Logs begin at Tue 2017-03-28T12:02:58 x UTC, y --",
    "-- Logs begin at Tue 2017-03-28 12:02:58 UTC --",
    "-- Logs begin at Tue 2017-03-28 12:02:58 UTC, --",
    "-- Logs begin at Tue 2017-03-28 12:02:58 UTC,--",
    "-- Logs begin at Tue 2017-03-28 12:02:58 UTC,x\n --",
    "-- Logs begin at Tu 2017-03-28 12:02:58 UTC, x --",
    "-- Logs begin at Tue  2017-03-28 12:02:58 UTC, x --",
    "-- Logs begin at Tue 2017-03-28\t12:02:58 UTC, x --",
    "-- Logs begin at Tue 2017-03-28 12:02:58 U-C, x --",
    "-- Logs begin at Tue 2017-03-28 12:02:58 \u00e9, x --",
    "-- Logs begin at T\u00e9e 2017-03-28 12:02:58 UTC, x --",
    "-- Logs begin at Tue 2017-03-28 12:02:58 UTC, x -- ",
    "-- Logs begin at Tue --",
    "-- Reboot --",
    "-- No entries --",
    "-- x --",
    "-- x--",
    "-- - --",
    "---- x --",
    "-- \nx --",
    "-- x\n --",
    "-- x --\n",
    "--  --",
    "-- ",
    "--",
]


def test_generated_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = syslog_lines() + _META
    for name in FORMATS:
        pure, fast = pair(name, monkeypatch)
        assert same(pure, fast, lines) > len(lines) // 10


def test_edited_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = mutants(syslog_lines(), 24_000) + mutants(_META, 2000, seed=5)
    for name in FORMATS:
        pure, fast = pair(name, monkeypatch)
        assert same(pure, fast, lines) > 1000


def test_corpus_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = corpus_lines()
    if not lines:
        pytest.skip("no ../shared/corpus")
    for name in FORMATS:
        pure, fast = pair(name, monkeypatch)
        assert same(pure, fast, lines + mutants(lines, 10_000)) > 5


def _bench_lines(count: int) -> list[str]:
    bench = Path(__file__).parents[1] / "benchmarks" / "parse.py"
    spec = importlib.util.spec_from_file_location("parse_bench_syslog_fast", bench)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [module.syslog(n) for n in range(count)] + [module.journal(n) for n in range(count)]


def test_benchmark_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _bench_lines(2000)
    for name in FORMATS:
        pure, fast = pair(name, monkeypatch)
        assert same(pure, fast, lines) >= 2000


class _NoRegex:
    """Stands in for a compiled regex: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the fast path used a regex ({name})")


def test_common_lines_take_the_fast_path_without_re(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus's syslog and journal files and the benchmark's lines are read
    without Python's ``re`` (and without the Python parse)."""
    common_lines = _bench_lines(500)
    for file in (
        "linux-syslog-devstack-2014.log",
        "openstack-devstack-cinder-api-journal-2017.log",
    ):
        if (CORPUS / file).is_file():
            common_lines += (CORPUS / file).read_text(encoding="utf-8").splitlines()
    parsers = {name: pair(name, monkeypatch)[1] for name in FORMATS}
    for module, names in (
        (syslog, ("_RFC3164", "_TAG", "_JOURNAL_META")),
        (oslo, ("_BODY", "_LINE")),
        (common, ("_ANSI", "_EXCEPTION_LINE")),
    ):
        for attribute in names:
            assert isinstance(getattr(module, attribute), re.Pattern)
            monkeypatch.setattr(module, attribute, _NoRegex())
    for parser in parsers.values():
        monkeypatch.setattr(parser, "_match", _NoRegex())
    read = {name: 0 for name in FORMATS}
    for line in common_lines:
        for name, parser in parsers.items():
            if parser.parse(line, {"message": line}) is not None:
                read[name] += 1
    assert read["syslog"] >= 500
    assert read["journal"] >= 500


def _built(clock: ManualClock, zone: dt.tzinfo | None, *, pure: bool) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        if pure:
            patch.setenv("LOGSTREAM_PURE", "1")
        return build_parsers(clock, zone)


@pytest.mark.parametrize("zone", [None, ZoneInfo("America/New_York")], ids=["utc", "zone"])
def test_year_guesses_follow_the_day_and_the_zone(
    monkeypatch: pytest.MonkeyPatch, zone: dt.tzinfo | None
) -> None:
    """Year-less times read the year guess the Timestamps cache holds for the
    current day: across New Year (``refresh``) both parsers move alike; a
    configured zone converts alike."""
    pair("syslog", monkeypatch)  # skips when not built
    start = dt.datetime(2026, 12, 31, 12, tzinfo=dt.UTC).timestamp()
    clocks = {kind: ManualClock(wall_start=start) for kind in ("pure", "fast")}
    built = {kind: _built(clocks[kind], zone, pure=kind == "pure") for kind in clocks}
    lines = [
        "Jan  1 00:30:00 h a: x",
        "Jan  2 00:30:00 h a: x",  # 2026 on the first day, 2027 on the next
        "Jan 2 00:30:00 h a: x",
        "Jan  2 00:30:00.5 h a[1]: x",
        "Dec 31 23:30:00 h a: x",
        "Feb 29 10:00:00 h a: x",
        "Jan  1 00:30:00.5 h a[1]: INFO x [-] y",
        "Mar  8 02:30:00 h a: x",  # no such time in New York
        "Nov  1 01:30:00 h a: x",  # twice in New York
        "Nov  1 2026 01:30:00 h a: x",
        "2026-11-01T01:30:00 h a: x",
    ]
    for _ in range(3):
        for kind in clocks:
            built[kind][0].refresh()
        for name in FORMATS:
            assert same(built["pure"][1][name], built["fast"][1][name], lines) > 0
        for clock in clocks.values():
            clock.advance(86_400.0)


# --------------------------------------------------------------------------- hypothesis

_FRAGMENTS = st.sampled_from(
    [
        "<13>",
        "<",
        ">",
        "Mar 28 12:20:44",
        "Jun  9",
        " 2021",
        ".172534",
        "2017-03-28T12:20:44",
        "+0000",
        "+02:00",
        "Z",
        " ",
        "node-1",
        "cinder-api",
        "[",
        "]",
        ":",
        "8526",
        "INFO",
        "TRACE",
        "ERROR",
        "warning:",
        "cinder.api",
        "req-1",
        "-",
        "-- ",
        " --",
        "Logs begin at Tue ",
        "UTC,",
        ".py:",
        "12",
        "\t",
        "\n",
        "\x1b[31m",
        "\u00e9",
        "\u3000",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=3)), max_size=16))
def test_any_text(parts: list[str]) -> None:
    line = "".join(parts)
    lines = [
        line,
        "Mar 28 12:20:44.172534 " + line,
        "<13>Jun  9 15:41:36 " + line,
        "2017-03-28T12:20:44+0000 node-1 " + line,
        "Mar 28 12:20:44.172534 node-1 cinder-api[8526]: " + line,
        "Jun  9 15:41:36 node-1 kernel: " + line,
        "-- " + line + " --",
    ]
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in FORMATS:
            pure, fast = pair(name, monkeypatch)
            same(pure, fast, lines)


def test_a_journal_iso_time_in_utc_is_not_the_journal_and_raises_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """journalctl's short-iso writes +hhmm; ``Z`` made the Python parser index
    past the zone (IndexError). Now neither parser raises: the line is syslog's."""
    line = "2018-08-14T14:30:02Z host x: y"
    for name, want in (("journal", None), ("syslog", "2018-08-14T14:30:02.000Z")):
        pure, fast = pair(name, monkeypatch)
        got = [parser.parse(line, {}) for parser in (pure, fast)]
        assert got[0] == got[1]
        assert (got[0] or {}).get("@timestamp") == want
