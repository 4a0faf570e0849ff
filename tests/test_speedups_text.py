"""The compiled console and ansible_log parsers (``_console_fast.pyx``,
``_ansible_fast.pyx``) read lines exactly as the pure-Python parsers do: same
fields, same types, same ``None``.

Lines come from each format's definition (generated here: every Ansible
version's prefix, devstack console lines with xtrace, level words, ANSI
escapes), from random edits of those lines, from hypothesis over the
formats' fragments, and from ../shared/corpus when it is there. See
``tests/support/speedups.py``.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.parsers.common import compiled
from tests.support.speedups import assert_same, corpus_lines, mutants, parser_pair


@pytest.mark.parametrize("module", ["_console_fast", "_ansible_fast"])
def test_the_compiled_text_parsers_are_built(module: str) -> None:
    if os.environ.get("LOGSTREAM_PURE", "0") not in ("", "0"):
        pytest.skip("LOGSTREAM_PURE is set")
    assert compiled(module) is not None, f"logstream.parsers.{module} is not built"


@pytest.mark.parametrize(
    ("name", "module"), [("console", "_console_fast"), ("ansible_log", "_ansible_fast")]
)
def test_the_compiled_text_parsers_are_used(name: str, module: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pure, fast = parser_pair(name, monkeypatch)
    assert getattr(pure.parse, "__func__", None) is type(pure).parse  # the Python method
    assert type(getattr(fast.parse, "__self__", None)).__module__ == f"logstream.parsers.{module}"


# --------------------------------------------------------------------------- console

_C_STAMPS = [
    "2014-03-17 16:11:24.173",
    "2014-03-17 16:11:24.173456",
    "2014-03-17 16:11:24.17",
    "2014-03-17 16:11:24.1734567",
    "2014-02-30 16:11:24.173",
    "2014-03-17 24:11:24.173",
    "2014-03-17T16:11:24.173",
    "2014-03-17 16:11:24,173",
]
_C_SEPS = [" | ", " |", " |  ", "| ", " || ", " |\t", " ]", "  | "]
_C_TEXTS = [
    "",
    "+ echo_summary 'Installing package prerequisites'",
    "++ [[ -n '' ]]",
    "+++ date +%s",
    "+" * 16 + " x",
    "+" * 17 + " x",
    "+x",
    "+",
    "+ ",
    "+\tcmd",
    "++ multi\nline",
    "Traceback (most recent call last):",
    "Traceback (most recent",
    "warning: no files found matching '*.html'",
    "WARNING: x",
    "ERROR: boom",
    "ERROR boom",
    "error boom",
    "[Warning] x",
    "[Warning]",
    "<error> x",
    "(info) x",
    "*** ERROR ***",
    "failed to init",
    "ok, done",
    "Setting up erlang-asn1 (1:14.b.4-dfsg-1ubuntu1) ...",
    "  Downloading pkg1-1.2.tar.gz (300kB)",
    "\x1b[31mERROR\x1b[0m: x",
    "\x1b[1;32m+ cmd\x1b[0m",
    "\x1b[0m",
    "CRITICAL",
    "INFO:",
    "TRACE x",
    "\u00c9RROR: x",
    "ERROR\u00e9: x",
    "\u00e9t\u00e9 caf\u00e9",
    "\tWARNING x",
    "\x1c WARNING x",
    "\u3000WARNING x",
    "\x85ERROR x",
    "VERYLONGLEVELWORD: x",
    "ABCDEFGHIJKLM: x",
    "ABCDEFGHIJKLMN: x",
    "INFORMATIONAL: x",
    "[informational] x",
    "EMERGENCY x",
    "WARN-",
    "-- ERROR",
    "                        ERROR",
    "                       ERROR",
    "ERR0R: x",
    "DEPRECATION: x",
    "notice: x",
    "Fatal: x",
    "E: Unable to locate package",
    ":",
    "[]",
    "Stdout: 'x'",
]
_C_BARE = [
    "+ exec /bin/bash -c 'cd /opt/stack/nova && /usr/local/bin/nova-api'",
    "++ id -u",
    "+" * 16 + " x",
    "+" * 17 + " x",
    "+x",
    "+",
    "+ ",
    "+\u00e9 x",
    "+ \u00e9",
    "stack.sh log",
    "",
    "2014-03-17",
]


def console_lines() -> list[str]:
    lines = [
        f"{stamp}{sep}{text}"
        for stamp, sep, text in itertools.product(_C_STAMPS[:2], _C_SEPS[:3], _C_TEXTS)
    ]
    base = ("2014-03-17 16:11:24.173", " | ", "+ install_package x")
    for index, values in enumerate((_C_STAMPS, _C_SEPS, _C_TEXTS)):
        for value in values:
            parts = list(base)
            parts[index] = value
            lines.append("".join(parts))
    return lines + _C_BARE


def test_console_generated_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = parser_pair("console", monkeypatch)
    lines = console_lines()
    assert assert_same(pure, fast, lines) > len(lines) // 2


def test_console_edited_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = parser_pair("console", monkeypatch)
    lines = mutants(console_lines(), 30_000)
    assert assert_same(pure, fast, lines) > 1000


# --------------------------------------------------------------------------- ansible_log

_A_STAMPS = [
    "2020-01-07 22:21:13,579",
    "2020-02-30 22:21:13,579",
    "2020-01-07 22:21:13,57",
    "2020-01-07 22:21:13,5790",
    "2020-01-07 22:21:13.579",
    "2020-01-07T22:21:13,579",
]
# Every version's prefix (tests/test_parse_formats.py ANSIBLE_PREFIXES) first,
# then the shapes around them the regex reads or refuses.
_A_PREFIXES = [
    "p=4284 u=root | ",  # 2.4-2.7
    "p=root u=4284 | ",  # 2.8-2.9
    "p=4284 u=root n=ansible | ",  # 2.10-2.16
    "p=4284 u=root n=ansible INFO| ",  # 2.17-2.19
    "p=4284 u=root n=ansible WARNING| ",
    "p=4284 u=root n=ansible DEBUG | ",
    "p=4284 u=root n=ansible WARN|",
    "p=4284 u=root n=ansible CRITICAL| ",
    "p=4284 u=root n=ansible CRITICALX| ",
    "p=4284 u=root n=ansible IN| ",
    "p=4284 u=root n=ansible Info| ",
    "p=4284 u=root NOTICE| ",
    "p=4284 u=root n=ansible |",
    "p=4284 u=root n= | ",
    "p=4284 u=root n=ansible  | ",
    "p=4284 u=root|  ",
    "p=4284 u=root |",
    "p= u= | ",
    "p= u=|",
    "p=4284 u=ro|ot | ",
    "p=4284 u=root|x ",
    "p=4284 u=root n=an|sible | ",
    "p=4284 u=root n=ansible|x | ",
    "p=4284 u=root n=ansible INFO|x |",
    "p=4284 u=root\t| ",
    "p=4284\tu=root | ",
    "p=4284 u=root n=ansible\tINFO| ",
    "p=12345678901 u=root | ",
    "p=1234567890 u=root | ",
    "p=0042 u=root | ",
    "p=root u=root | ",
    "p=\u0663 u=root | ",
    "p=root u=\u0663 | ",
    "p=4284 u=r\u00f6\u00f6t n=\u00e9 | ",
    "p=4284 u=root n=ansible",
    "p=4284 u=",
    "p=4284 | ",
    "p=4284 u=root x=1 | ",
]
_A_TEXTS = [
    "PLAY [webservers] ***********************",
    "TASK [common : install packages] ********",
    "TASK [Gathering Facts] *****",
    "TASK [unclosed ****",
    "RUNNING HANDLER [restart nginx] ****",
    "PLAY RECAP *********",
    "PLAYBOOK: site.yml",
    "META: ran handlers",
    "PLAY []",
    "ok: [web-1]",
    "ok: []",
    "ok: [" + "h" * 300 + "]",
    "ok: [" + "h" * 301 + "]",
    "ok: [web-1",
    "ok:  [web-1]",
    "okay: [web-1]",
    "skipping: [web-2]",
    "changed: [db-1] => (item=nginx)",
    'failed: [db-1] (item=x) => {"changed": false}',
    'fatal: [db-2]: FAILED! => {"msg": "boom"}',
    "fatal: [db-3]: UNREACHABLE! => {",
    "unreachable: [db-4]",
    "ok: [multi\nline]",
    "included: /opt/x/tasks/main.yml for web-1, web-2",
    "included: x for",
    "[WARNING]: Could not match supplied host pattern",
    "[DEPRECATION WARNING]: The 'x' option is deprecated.",
    "[ERROR]: x",
    "[WARN] x",
    "ERROR! the role 'x' was not found",
    "ERROR x",
    "web-1 : ok=3 changed=1 unreachable=0 failed=0 skipped=0",
    "db-1 : ok=1 changed=0 unreachable=1 failed=0",
    "db-1                       : ok=1    changed=0    unreachable=0    failed=2",
    "spine-02 | UNREACHABLE! => {",
    "web-1 | SUCCESS => {",
    "web-1 | CHANGED | rc=0 >>",
    "web-1 | FAILED! => {",
    "web-1 | FAILED",
    "web-1 | SUCCESS (x)",
    "web-1 | SUCCESS",
    "web-1 | SUCCESS\n",
    "web-1 | SUCCESS\nx",
    "web-1 | SUCCESS \t|",
    "web-1 | SUCCESS\u3000| x",
    "web-1 | SUCCESS  x",
    "web-1 | SUCCESSFUL => {",
    "web-1 | UNREACHABLE! =>",
    "web-1 | CHANGED (x)",
    "web-1 |  SUCCESS => {",
    "web 1 | SUCCESS => {",
    "web\u3000x | SUCCESS => {",
    "web\x1cx | SUCCESS => {",
    "h" * 300 + " | SUCCESS => {",
    "h" * 301 + " | SUCCESS => {",
    "x" * 290 + " | SUCCESS => {",
    "web-1\t: ok=3 changed=1 unreachable=0 failed=0",
    "web-1 :  ok=3 changed=1 unreachable=0 failed=0",
    "web-1 \x0c: ok=3\nchanged=1\tunreachable=0 failed=0",
    "web-1 : ok=3 changed=1 unreachable=0 failed=0000000001",
    "web-1 : ok=3 changed=1 unreachable=0 failed=0000000010",
    "web-1 : ok=3 changed=1 unreachable=0 failed=1000000000",
    "web-1 : ok=3 changed=1 unreachable=0000000001 failed=0",
    "web-1 : ok=3 changed=1 unreachable=000000001 failed=0",
    "web-1 : ok=1234567890 changed=1 unreachable=0 failed=0",
    "web-1 : ok=3 changed=1 unreachable=0 failed=x",
    "web-1 : ok=3 changed=1 unreachable=0 failed=",
    "web-1 : ok=3 changed=1 unreachable=0",
    "web-1: ok=3 changed=1 unreachable=0 failed=0",
    "web\u00e9 : ok=3 changed=1 unreachable=2 failed=0",
    "web-1\u3000: ok=3 changed=1 unreachable=0 failed=0",
    "h" * 300 + " : ok=1 changed=0 unreachable=0 failed=0",
    "h" * 301 + " : ok=1 changed=0 unreachable=0 failed=0",
    "a | b : ok=1 changed=0 unreachable=0 failed=1",
    "spine-01 | SUCCESS : ok=1 changed=0 unreachable=0 failed=1",
    "okay | SUCCESS => {",
    "changed | FAILED! => {",
    "included | CHANGED",
    "included: x | SUCCESS",
    "<web-1> ESTABLISH SSH CONNECTION FOR USER: deploy",
    "<web-1>",
    "<> x",
    "<" + "h" * 298 + "> x",
    "<" + "h" * 299 + "> x",
    "  TASK [x] ***",
    " ok: [web-1]",
    "\x1b[0;32mok: [web-1]\x1b[0m",
    "\x1b[0;31mfatal: [db]: FAILED!\x1b[0m",
    "",
    " ",
    "   ",
    "something odd",
    "\u00e9 | SUCCESS => {",
    "ok: [\u00e9]",
    '    "changed": false,',
    "}",
]


def ansible_lines() -> list[str]:
    lines = [
        f"{stamp} {prefix}{text}"
        for stamp, prefix, text in itertools.product(_A_STAMPS[:1], _A_PREFIXES[:8], _A_TEXTS)
    ]
    base = ("2020-01-07 22:21:13,579", "p=4284 u=root n=ansible | ", "ok: [web-1]")
    for index, values in enumerate((_A_STAMPS, _A_PREFIXES, _A_TEXTS)):
        for value in values:
            parts = list(base)
            parts[index] = value
            stamp, prefix, text = parts
            lines.append(f"{stamp} {prefix}{text}")
    return lines


def test_ansible_generated_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = parser_pair("ansible_log", monkeypatch)
    lines = ansible_lines()
    assert assert_same(pure, fast, lines) > len(lines) // 2


def test_ansible_edited_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    pure, fast = parser_pair("ansible_log", monkeypatch)
    lines = mutants(ansible_lines(), 30_000)
    assert assert_same(pure, fast, lines) > 1000


# --------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("name", ["console", "ansible_log"])
def test_corpus_lines(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = corpus_lines()
    if not lines:
        pytest.skip("no ../shared/corpus")
    pure, fast = parser_pair(name, monkeypatch)
    own = [line for line in lines if pure.parse(line, {"message": line}) is not None]
    assert len(own) > 500  # the corpus has a log of each format
    assert assert_same(pure, fast, lines + mutants(own, 20_000) + mutants(lines, 20_000)) > 10_000


# --------------------------------------------------------------------------- any text

_FRAGMENTS = st.sampled_from(
    [
        "2014-03-17 16:11:24.173",
        "2020-01-07 22:21:13,579",
        " ",
        "  ",
        "|",
        " | ",
        "+",
        "++ ",
        "p=",
        "u=",
        " n=",
        "4284",
        "root",
        "ansible",
        "INFO",
        "WARNING",
        "warning:",
        "[",
        "]",
        "TASK [",
        "ok: [",
        "included: ",
        " for ",
        ": ok=",
        " changed=1 unreachable=0 failed=0",
        "SUCCESS",
        "UNREACHABLE!",
        " =>",
        "<",
        "> ",
        "Traceback (most recent call last):",
        "\x1b[31m",
        "\t",
        "\n",
        "\u00e9",
        "\u3000",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=3)), max_size=14))
def test_any_text(parts: list[str]) -> None:
    line = "".join(parts)
    with pytest.MonkeyPatch.context() as monkeypatch:
        pure, fast = parser_pair("console", monkeypatch)
    assert_same(pure, fast, [line, "2014-03-17 16:11:24.173 | " + line, "+ " + line])
    with pytest.MonkeyPatch.context() as monkeypatch:
        pure, fast = parser_pair("ansible_log", monkeypatch)
    assert_same(
        pure,
        fast,
        [
            line,
            "2020-01-07 22:21:13,579 " + line,
            "2020-01-07 22:21:13,579 p=1 u=root " + line,
            "2020-01-07 22:21:13,579 p=1 u=root n=ansible | " + line,
        ],
    )
