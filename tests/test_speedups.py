"""The compiled parsers (Cython, ``logstream/parsers/*.pyx``) read lines exactly as
the pure-Python parsers do: same fields, same types, same ``None``.

Lines come from each format's definition (generated here), from random
edits of those lines, from hypothesis, and from ../shared/corpus when it is
there. See ``tests/support/speedups.py``.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.parsers.common import compiled
from tests.support.speedups import assert_same, corpus_lines, mutants, parser_pair


def test_the_compiled_parsers_are_built_and_used() -> None:
    """scripts/bootstrap builds them; a checkout where they silently fell back
    to pure Python would pass every other test here by skipping."""
    if os.environ.get("LOGSTREAM_PURE", "0") not in ("", "0"):
        pytest.skip("LOGSTREAM_PURE is set")
    assert compiled() is not None, "logstream.parsers._speedups is not built: run scripts/bootstrap"


def test_pure_mode_turns_the_compiled_parsers_off(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = parser_pair("oslo", monkeypatch)
    assert getattr(pure.parse, "__func__", None) is type(pure).parse  # the Python method
    assert type(getattr(fast.parse, "__self__", None)).__module__ == "logstream.parsers._speedups"


# --------------------------------------------------------------------------- oslo

_STAMPS = [
    "2026-03-02 09:15:27.118",
    "2026-03-02 09:15:27.118123",
    "2026-02-30 09:15:27.118",
    "1999-12-31 23:59:59.9999",
    "2026-03-02 24:00:00.000",
]
_PIDS = ["", "4242 ", "1234567890 ", "12345678901 "]
_LEVELS = ["INFO", "DEBUG", "AUDIT", "TRACE", "WARNING", "ERROR", "CRITICAL", "WARN", "FOO", "info"]
_LOGGERS = ["nova.api", "neutron.wsgi", "[x", "a[b]", "ü.mod"]
_CONTEXTS = [
    "",
    " [-]",
    " [req-1a2b u1 p1]",
    " [req-1a2b None None]",
    " [req-1a2b - -]",
    " [req-a req-b u1 p1 - default default]",
    " [None req-b]",
    " [req-x",
    " []",
    " [a]b",
    " [a] ",
]
_MESSAGES = [
    "",
    " GET /v2",
    " [instance: 7d1f-aa] Terminating",
    " [instance: 7d1f-aa]",
    " msg fn /opt/x.py:12",
    " msg from (pid=77) fn /opt/x.py:12",
    " msg 1.py:3",
    " fn /opt/x.py:1234567890123456789",
    " trailing 12",
    " \u00e9t\u00e9 caf\u00e9 /x.py:9",
    " multi\nline fn /a.py:1",
    "\tTab",
]


def oslo_lines() -> list[str]:
    lines = [
        f"{stamp} {pid}{level} {logger}{context}{message}"
        for stamp, pid, level, logger, context, message in itertools.product(
            _STAMPS[:2], _PIDS[:2], _LEVELS[:4], _LOGGERS[:2], _CONTEXTS, _MESSAGES
        )
    ]
    # Every other value once, on an otherwise plain line.
    base = ("2026-03-02 09:15:27.118", "4242 ", "INFO", "nova.api", " [-]", " GET /v2")
    for index, values in enumerate((_STAMPS, _PIDS, _LEVELS, _LOGGERS, _CONTEXTS, _MESSAGES)):
        for value in values:
            parts = list(base)
            parts[index] = value
            stamp, pid, level, logger, context, message = parts
            lines.append(f"{stamp} {pid}{level} {logger}{context}{message}")
    return lines


def test_oslo_generated_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = parser_pair("oslo", monkeypatch)
    lines = oslo_lines()
    assert assert_same(pure, fast, lines) > len(lines) // 2


def test_oslo_edited_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = parser_pair("oslo", monkeypatch)
    lines = mutants(oslo_lines(), 30_000)
    assert assert_same(pure, fast, lines) > 1000


def test_oslo_corpus_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = corpus_lines()
    if not lines:
        pytest.skip("no ../shared/corpus")
    pure, fast = parser_pair("oslo", monkeypatch)
    assert assert_same(pure, fast, lines + mutants(lines, 20_000)) > 5000


_FRAGMENTS = st.sampled_from(
    [
        "2026-03-02 09:15:27.118",
        " ",
        "4242",
        "INFO",
        "TRACE",
        "nova.api",
        "[",
        "]",
        "req-1",
        "-",
        ".py:",
        "12",
        "from (pid=3)",
        "[instance: ",
        "] ",
        "\t",
        "\n",
        "\u00e9",
        "fn",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=3)), max_size=14))
def test_oslo_any_text(parts: list[str]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pure, fast = parser_pair("oslo", monkeypatch)
    line = "".join(parts)
    assert_same(
        pure,
        fast,
        [line, "2026-03-02 09:15:27.118 " + line, "2026-03-02 09:15:27.118 4242 INFO x " + line],
    )
