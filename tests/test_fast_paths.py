"""The fast paths of the parse and redact filters give exactly what the plain paths give.

- detection offers a line only to the parsers whose ``starts`` allow its first
  character: no parser ever accepts a line outside its ``starts``;
- the access-log parser reads the plain line (one address, no backslash) with
  one regex, others with a short head regex and ``str.find``: the same fields
  as the full regex on any line;
- redact screens a batch's texts as one (Hyperscan, or the Aho-Corasick
  automaton without it) and checks secret-named keys batch-wide: the same
  events and the same count as redacting each text and walking each event.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.clock import ManualClock
from logstream.config import parse_config
from logstream.metrics import Registry
from logstream.parsers import build_parsers
from logstream.units import BuildContext

CORPUS = Path(__file__).parents[2] / "shared" / "corpus"
_, PARSERS = build_parsers(ManualClock())


def corpus_lines() -> list[str]:
    if not CORPUS.is_dir():
        return []
    lines: list[str] = []
    for path in sorted(CORPUS.glob("*.log")) + sorted(CORPUS.glob("*.txt")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines


def _accepts_outside_starts(line: str) -> list[str]:
    first = line[:1]
    if not first or not first.isascii():
        return []
    return [
        name
        for name, parser in PARSERS.items()
        if parser.starts is not None
        and first not in parser.starts
        and parser.parse(line, {}) is not None
    ]


# ----------------------------------------------------------------------------- detection


LINE_SHAPES = st.one_of(
    st.from_regex(r"\A[ \t+<\[\-0-9A-Za-z{\"]{0,2}.{0,60}\Z"),
    st.from_regex(r"\A.?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.,]\d{3} .{0,40}\Z"),
    st.from_regex(r"\A.?(<\d{1,3}>)?[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S{0,8} .{0,20}\Z"),
    st.text(max_size=80),
)


@settings(max_examples=200, deadline=None)
@given(line=LINE_SHAPES)
def test_no_parser_accepts_a_line_outside_its_starts(line: str) -> None:
    assert _accepts_outside_starts(line) == []


def test_no_parser_accepts_a_corpus_line_outside_its_starts() -> None:
    lines = corpus_lines()
    if not lines:
        pytest.skip(f"no corpus at {CORPUS}")
    bad = [(line[:80], names) for line in lines if (names := _accepts_outside_starts(line))]
    assert bad == []


# ----------------------------------------------------------------------------- access logs

_STAMP = r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"
_QUOTED_PART = r'"([^"\\\n]|\\.|"){0,12}"?'
ACCESS_SHAPES = st.one_of(
    st.from_regex(
        rf"\A([\w.]{{1,6}}:\d{{1,3}} )?[\w.:,]{{1,8}}(, [\w.]{{1,5}})? [\w-]{{1,3}} "
        rf"[\w\[-]{{1,3}} {_STAMP} {_QUOTED_PART} [\d-]{{1,4}} [\d-]{{1,4}}"
        rf"( {_QUOTED_PART}( {_QUOTED_PART})?)?.{{0,6}}\Z"
    ),
    st.text(alphabet=' "\\[]:,-0123456789abGET/HTP.+', max_size=90).map(
        lambda text: f'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "{text}'
    ),
)


@settings(max_examples=250, deadline=None)
@given(line=ACCESS_SHAPES)
def test_access_fast_path_reads_lines_as_the_full_regex_does(line: str) -> None:
    parser: Any = PARSERS["apache_access"]
    assert parser.parse(line, {}) == parser._slow(line) == parser._general(line)


def test_access_fast_path_reads_the_corpus_as_the_full_regex_does() -> None:
    parser: Any = PARSERS["apache_access"]
    lines = [line for line in corpus_lines() if " [" in line]
    if not lines:
        pytest.skip(f"no corpus at {CORPUS}")
    assert [parser.parse(line, {}) for line in lines] == [parser._slow(line) for line in lines]
    assert [parser.parse(line, {}) for line in lines] == [parser._general(line) for line in lines]


# ----------------------------------------------------------------------------- redact


def _redact(config: dict[str, Any] | None = None) -> Any:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "redact", **(config or {})}],
            "sinks": [{"type": "stdout"}],
        }
    )
    return parsed.filters[0].build("redact", BuildContext(registry=Registry()))


def _planted() -> list[str]:
    bench = Path(__file__).parents[1] / "benchmarks" / "redact.py"
    spec = importlib.util.spec_from_file_location("redact_bench_fast", bench)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [line for _, line, _ in module.samples(3)]


def _events() -> list[dict[str, Any]]:
    texts = _planted() + corpus_lines()[:1500]
    events: list[dict[str, Any]] = [
        {"message": text, "host": "h", "tags": ["t"], "seq": n} for n, text in enumerate(texts)
    ]
    # Batches the screen cannot take as one ASCII text, and values that are no text.
    events[5]["message"] = "ünïcode password=sekrit1 and https://u:p4ss@host/x"
    events[9]["message"] = 12345
    del events[11]["message"]
    events[14]["password"] = "hunter22"  # noqa: S105 - a planted test secret
    events[15]["nested"] = {"db": {"password": "pw-nested"}, "items": [{"token": "tk-1"}, "x"]}
    events[16]["tags"] = [{"api_key": "k-1"}, ["x"]]
    return events


def _per_event(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """What the filter did before its batch paths: each text, then each event's walk."""
    unit = _redact()
    for event in events:
        value = event.get("message")
        if type(value) is str:
            masked = unit.redact_text(value)
            if masked != value:
                event["message"] = masked
        unit._walk(event, 0)
    return events, unit._counter.hits


@pytest.mark.parametrize("hyperscan", [True, False], ids=["hyperscan", "automaton"])
@pytest.mark.parametrize("size", [1, 7, 1000])
def test_batch_redaction_equals_redacting_each_event(hyperscan: bool, size: int) -> None:
    events = _events()
    expected, hits = _per_event(copy.deepcopy(events))
    unit = _redact()
    if hyperscan and unit._scan_batch is None:
        pytest.skip("Hyperscan is not installed here")
    if not hyperscan:
        unit._scan_batch = None
    out: list[dict[str, Any]] = []
    for at in range(0, len(events), size):
        out += unit.process(events[at : at + size])
    assert out == expected
    assert unit._counter.hits == hits > 0


def test_a_lower_case_that_changes_length_redacts_each_text_on_its_own() -> None:
    events = [{"message": "İstanbul password=abc123"}, {"message": "token=xyz789 ok"}]
    [first, second] = _redact().process(events)
    assert first["message"] == "İstanbul password=***"
    assert second["message"] == "token=*** ok"


def test_secret_names_are_masked_when_a_batch_overflows_the_name_cache() -> None:
    """More new names in one batch than the cache keeps: none slips through."""
    batch: list[dict[str, Any]] = [{"password": "first-secret", "a0": "x"}]
    batch += [{f"field_{n}": "x"} for n in range(5000)]
    batch.append({"db_password": "last-secret"})
    out = _redact().process(batch)
    mask = "***"
    assert out[0]["password"] == mask
    assert out[-1]["db_password"] == mask


def test_the_batch_screen_finds_triggers_in_any_case() -> None:
    """Hyperscan matches caselessly on the text as it came (the batch is not lowered)."""
    texts = [
        "ADMIN_PASSWORD=Sekrit1 X-AUTH-TOKEN: abcdef12",
        "The Postgres PASSWORD IS 0123abcd",
        "Authorization: BEARER abcdefgh1234",
        "--OS-Password Hunter22 and https://Bob:Pa55w0rd@Host/x",
        # Triggers Hyperscan looks for as literals (no shape).
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----",
        "key AKIAABCDEFGHIJKLMNOP here",
        "GRANT ALL ON x.* TO 'u'@'h' IDENTIFIED BY 'S3cret!'",
    ]
    expected = [_redact().redact_text(text) for text in texts]
    assert expected == [
        "ADMIN_PASSWORD=*** X-AUTH-TOKEN: ***",
        "The Postgres PASSWORD IS ***",
        "Authorization: BEARER ***",
        "--OS-Password *** and https://Bob:***@Host/x",
        "-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----",
        "key *** here",
        "GRANT ALL ON x.* TO 'u'@'h' IDENTIFIED BY '***'",
    ]
    unit = _redact()
    out = unit.process([{"message": text} for text in texts])
    assert [event["message"] for event in out] == expected


def test_objects_in_lists_other_than_tags_are_walked() -> None:
    """The batch check that reads ``tags`` by name still finds objects in other lists."""
    batch: list[dict[str, Any]] = [{"message": "m", "tags": ["a"]} for _ in range(5)]
    batch[3]["results"] = [{"password": "in-a-list"}, "x"]
    batch[4]["tags"] = ["b", {"token": "in-tags"}]
    out = _redact().process(batch)
    assert out[3]["results"] == [{"password": "***"}, "x"]
    assert out[4]["tags"] == ["b", {"token": "***"}]
    assert out[0] == {"message": "m", "tags": ["a"]}
