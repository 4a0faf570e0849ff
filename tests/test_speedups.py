"""The compiled parsers (Cython, ``logstream/parsers/*.pyx``) read lines exactly as
the pure-Python parsers do: same fields, same types, same ``None``.

Lines come from each format's definition (generated here), from random
edits of those lines, from hypothesis, and from ../shared/corpus when it is
there. See ``tests/support/speedups.py``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.clock import ManualClock
from logstream.config import parse_config
from logstream.metrics import Registry
from logstream.parsers.common import compiled
from logstream.units import BuildContext
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


def test_a_missing_or_stale_build_is_not_used_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if compiled() is None:
        pytest.skip("the compiled parsers are not built (or LOGSTREAM_PURE is set)")
    with caplog.at_level(logging.WARNING):
        assert compiled("_no_such_module") is None
    assert "_no_such_module is not built" in caplog.text
    source = Path(__file__).resolve().parents[1] / "logstream" / "parsers" / "_speedups.pyx"
    before = source.stat()
    try:
        os.utime(source, (before.st_atime, before.st_mtime + 3600))  # edited after the build
        with caplog.at_level(logging.WARNING):
            assert compiled() is None
        assert "changed after it was compiled" in caplog.text
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert compiled() is not None


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


def test_oslo_continues(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which parsed line folds into which held record: the same in both."""
    pure, fast = parser_pair("oslo", monkeypatch)
    assert pure.continues is not None and fast.continues is not None
    stamp = "2026-03-02 09:15:27.118"
    lines = [
        f"{stamp} {pid}{level} {logger} [-] text"
        for pid in ("", "42 ", "43 ")
        for level in ("ERROR", "TRACE", "INFO")
        for logger in ("nova.api", "nova.db")
    ] + [f"2026-03-02 09:15:28.118 42 {level} nova.api [-] x" for level in ("ERROR", "TRACE")]
    fields = [pure.parse(line, {}) for line in lines]
    folded = 0
    for head in fields:
        for line in fields:
            assert head is not None and line is not None
            want = pure.continues(head, line)
            assert fast.continues(head, line) == want
            folded += want is not None
    assert folded > 20


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


# --------------------------------------------------------------------------- the filter's loop

_LINES = [
    "2026-03-02 09:15:{s:02d}.118 4242 INFO nova.api [req-1 u p] GET /v2/{n}",
    "2026-03-02 09:15:{s:02d}.118 4242 DEBUG nova.api [-] poll {n} fn /opt/x.py:{n}",
    "2026-03-02 09:15:{s:02d}.118 4242 ERROR nova.api [-] failed {n}",
    "2026-03-02 09:15:{s:02d}.118 4242 TRACE nova.api Traceback (most recent call last):",
    '2026-03-02 09:15:{s:02d}.118 4242 TRACE nova.api   File "x.py", line {n}',
    "Traceback (most recent call last):",
    '  File "/opt/x.py", line {n}, in f',
    "ValueError: bad {n}",
    "Jun 14 03:25:{s:02d} web-3 app[7]: line {n}",
    "<13>Jun 14 03:25:{s:02d} web-3 kernel: warning: disk {n}",
    "Mar 28 12:20:{s:02d}.172534 node cinder-api[85]: INFO cinder.api [req-{n} a b] GET",
    '10.0.0.{n} - - [24/Nov/2026:10:00:{s:02d} +0000] "GET /a HTTP/1.1" 500 {n} "-" "ua"',
    "2014-03-17 16:11:{s:02d}.173 | + install {n}",
    "2014-03-17 16:11:{s:02d}.173 | ERROR: failed {n}",
    "+ bare xtrace {n}",
    "2022-02-06 10:52:{s:02d},874 p=41 u=root n=ansible |  TASK [step {n}] ***",
    "2022-02-06 10:52:{s:02d},874 p=41 u=root n=ansible |  fatal: [h{n}]: FAILED! => {{",
    '    "msg": "boom {n}"',
    "}}",
    "TASK [copy {n}] ****",
    "ok: [web-{n}]",
    "",
    "   ",
    "free text nobody knows {n}",
    "2026-03-02 09:15:{s:02d}.118 4242 INFO nova.api [-] crlf {n}\r\n",
]
_ODD_MESSAGES: list[Any] = [b"bytes line", b"\xff\xfe bad utf-8", 42, None, ["a"], {"k": 1}]
_FORMATS: list[Any] = ["syslog", "oslo", "nonsense", ["list"], 7]


def _events(seed: int, count: int, streams: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)  # noqa: S311 (test data, not secrets)
    out: list[dict[str, Any]] = []
    for n in range(count):
        event: dict[str, Any] = {"host": f"h{rnd.randrange(streams)}", "path": "/var/log/x"}
        roll = rnd.random()
        if roll < 0.02:
            event["message"] = rnd.choice(_ODD_MESSAGES)
        elif roll < 0.05:
            event["message"] = "x"
            event["format"] = rnd.choice(_FORMATS)
        elif roll < 0.055:
            event.pop("host")  # the key's field missing
            event["message"] = "Jun 14 03:25:00 web-3 app[7]: no host"
        else:
            event["message"] = rnd.choice(_LINES).format(s=n // 50 % 60, n=n)
        out.append(event)
    return out


def _unit(config: dict[str, Any], clock: ManualClock) -> tuple[Any, Registry]:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse", **config}],
            "sinks": [{"type": "stdout"}],
        }
    )
    registry = Registry()
    unit = parsed.filters[0].build("parse", BuildContext(registry=registry, clock=clock))
    return unit, registry


def _run(config: dict[str, Any], events: list[dict[str, Any]]) -> tuple[list[Any], dict[str, Any]]:
    clock = ManualClock(wall_start=1_795_000_000.0)
    unit, registry = _unit(config, clock)
    out: list[Any] = []
    for start in range(0, len(events), 97):
        out.append(unit.process(copy.deepcopy(events[start : start + 97])))
        clock.advance(0.4)
        out.append(unit.tick(clock.monotonic()))
    out.append(unit.flush())
    metrics = registry["parse"]
    counts = {
        "out": metrics.events_out,
        "dropped": dict(metrics.dropped),
        "issues": dict(metrics.decode_issues),
    }
    return out, counts


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"max_streams": 3},
        {"fields": "ecs"},
        {"inherit_level": False, "multiline_max_lines": 3, "multiline_max_bytes": 120},
        {"default_level": "WARNING", "multiline_timeout_secs": 0.3},
        {"multiline": False},
        {"format": "oslo"},
        {"stream_key": ["host"], "source": "message", "redetect_after_lines": 2},
        {"stream_key": ["[host]", "path"]},
        {"source": "[message]"},
        {"keep_original": True},
    ],
    ids=lambda config: ",".join(f"{k}={v}" for k, v in config.items()) or "default",
)
def test_the_compiled_loop_gives_what_the_python_loop_gives(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if compiled("_parse_loop") is None:
        pytest.skip("the compiled parse loop is not built (or LOGSTREAM_PURE is set)")
    events = _events(seed=len(str(config)), count=3000, streams=7)
    fast = _run(config, events)
    monkeypatch.setenv("LOGSTREAM_PURE", "1")
    pure = _run(config, events)
    assert fast[1] == pure[1]
    for number, (got, want) in enumerate(zip(fast[0], pure[0], strict=True)):
        assert got == want, f"batch {number}"
    assert sum(map(len, fast[0])) > 500


# --------------------------------------------------------------------------- redact

_SECRET_KEYS = ["password", "api_key", "token", "ansible_become_pass", "vault_db", "note", "user"]


def _value(rnd: random.Random, depth: int) -> Any:
    roll = rnd.random()
    if depth < 4 and roll < 0.15:
        return {rnd.choice(_SECRET_KEYS): _value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}
    if depth < 4 and roll < 0.3:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    if roll < 0.35:
        return rnd.randint(0, 9)
    return rnd.choice(["s3cr3t-value", "", "x", "password=hunter22 in text", "plain"])


def _redact_events(seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)  # noqa: S311 (test data, not secrets)
    out = []
    for n in range(2000):
        event: dict[str, Any] = {"message": f"line {n}", "host": "h"}
        if rnd.random() < 0.5:
            event["tags"] = rnd.choice([["a", "b"], [], ["x", {"password": "p4ssw0rd!"}], "t"])
        for _ in range(rnd.randint(0, 3)):
            event[rnd.choice([*_SECRET_KEYS, "event_data", "results"])] = _value(rnd, 1)
        out.append(event)
    return out


def _redact_run(events: list[dict[str, Any]]) -> tuple[list[Any], int]:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "redact"}],
            "sinks": [{"type": "stdout"}],
        }
    )
    registry = Registry()
    unit = parsed.filters[0].build("redact", BuildContext(registry=registry, clock=ManualClock()))
    work = copy.deepcopy(events)
    out = [unit.process(work[start : start + 64]) for start in range(0, len(work), 64)]
    return out, registry["redact"].redactions


def test_redact_compiled_helpers_give_what_the_python_steps_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if compiled("_redact_fast", "logstream") is None:
        pytest.skip("the compiled redact helpers are not built (or LOGSTREAM_PURE is set)")
    events = _redact_events(seed=5)
    fast = _redact_run(events)
    monkeypatch.setenv("LOGSTREAM_PURE", "1")
    pure = _redact_run(events)
    assert fast == pure
    assert fast[1] > 500  # secrets were found at every depth, in both


# --------------------------------------------------------------------------- the reference itself

_PARSE_TESTS = [
    "tests/test_parsers.py",
    "tests/test_parse_filter.py",
    "tests/test_parse_formats.py",
    "tests/test_parse_properties.py",
    "tests/test_multiline.py",
    "tests/test_fast_paths.py",
    "tests/test_redact_recall.py",
]


def test_the_parse_and_redact_tests_pass_in_pure_python() -> None:
    """The rest of the suite runs the compiled code; the pure-Python code it is
    compared with must keep passing the same tests on its own."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_PARSE_TESTS],
        cwd=root,
        env={**os.environ, "LOGSTREAM_PURE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
