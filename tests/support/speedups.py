"""Differential checks of the compiled parsers (Cython) against the pure-Python ones.

The pure-Python parser is the reference: a compiled fast path must give the
same fields, or the same ``None``, for every line. :func:`assert_same` runs
lines through both; :func:`mutants` derives many near-misses from valid
lines (characters dropped, inserted from the formats' delimiters, lines cut),
which is where a hand-written scanner and a regex part ways.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from logstream.clock import ManualClock
from logstream.parsers import build_parsers
from logstream.parsers.common import Parser, compiled

CORPUS = Path(__file__).parents[3] / "shared" / "corpus"
# A fixed clock: year-less formats guess the same year in both builds.
NOW = 1_795_000_000.0

# Characters that matter to the formats' grammars, plus whitespace that \s
# knows and non-ASCII text (a scanner reading bytes would trip on it).
DELIMITERS = " \t\n\r\x0b\x0c[]()<>{}:;,.-_+=|/\\\"'*#@0123456789AZaz\u00e9\u3000\u2028\x85"


def parser_pair(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Parser, Parser]:
    """(pure-Python parser, compiled parser) of format ``name``; skips when not built."""
    if compiled() is None:
        pytest.skip("the compiled parsers are not built (or LOGSTREAM_PURE is set)")
    fast = build_parsers(ManualClock(wall_start=NOW))[1][name]
    with monkeypatch.context() as patch:
        patch.setenv("LOGSTREAM_PURE", "1")
        pure = build_parsers(ManualClock(wall_start=NOW))[1][name]
    return pure, fast


def mutants(lines: list[str], count: int, seed: int = 12) -> list[str]:
    """``count`` lines, each a valid line with one to three random edits."""
    rnd = random.Random(seed)  # noqa: S311 (test data, not secrets)
    out = []
    for _ in range(count):
        chars = list(rnd.choice(lines))
        for _ in range(rnd.randint(1, 3)):
            pos = rnd.randrange(len(chars) + 1)
            op = rnd.random()
            if op < 0.4 and chars:
                del chars[min(pos, len(chars) - 1)]
            elif op < 0.8:
                chars.insert(pos, rnd.choice(DELIMITERS))
            elif op < 0.9 and chars:
                chars[min(pos, len(chars) - 1)] = rnd.choice(DELIMITERS)
            else:
                del chars[pos:]
        out.append("".join(chars))
    return out


def corpus_lines() -> list[str]:
    """Every line of ../shared/corpus's logs (empty when the corpus is absent)."""
    if not CORPUS.is_dir():
        return []
    lines: list[str] = []
    for path in sorted(CORPUS.glob("*.log")) + sorted(CORPUS.glob("*.txt")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines


def assert_same(pure: Parser, fast: Parser, lines: Iterable[str]) -> int:
    """Both parsers read every line alike; returns how many lines the format accepted."""
    accepted = 0
    for line in lines:
        event: dict[str, Any] = {"message": line}
        want = pure.parse(line, dict(event))
        got = fast.parse(line, dict(event))
        assert got == want, f"{pure.name}: {line!r}"
        if want is not None:
            # Same types too (1 == 1.0 == True would hide a wrong one).
            assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
            accepted += 1
    return accepted
