"""The multiline filter: Logstash-style pattern / negate / what, bounds, timeout, accounting."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.clock import ManualClock
from logstream.config import ConfigError, parse_config
from logstream.event import Batch
from logstream.metrics import Registry
from logstream.units import BuildContext, Filter


def build(config: dict[str, Any], clock: ManualClock | None = None) -> tuple[Filter, Registry]:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "multiline", **config}],
            "sinks": [{"type": "stdout"}],
        }
    )
    registry = Registry()
    ctx = BuildContext(registry=registry, clock=clock or ManualClock())
    return parsed.filters[0].build("ml", ctx), registry


def events(lines: list[str], **fields: Any) -> Batch:
    return [{"message": line, "seq": n, **fields} for n, line in enumerate(lines)]


def messages(out: Batch) -> list[str]:
    return [event["message"] for event in out]


def test_indented_lines_join_the_line_before() -> None:
    unit, registry = build({"pattern": r"^\s"})
    lines = [
        "Exception in thread main",
        "    at A.b(A.java:1)",
        "    at C.d(C.java:2)",
        "next",
        "last",
    ]
    out = unit.process(events(lines)) + unit.flush()
    assert messages(out) == [
        "Exception in thread main\n    at A.b(A.java:1)\n    at C.d(C.java:2)",
        "next",
        "last",
    ]
    assert [event["seq"] for event in out] == [0, 3, 4]  # the first event keeps its fields
    assert out[0]["tags"] == ["multiline"]
    assert "tags" not in out[1]
    assert registry["ml"].dropped == {"merged": 2}


def test_negate_joins_every_line_that_does_not_start_a_record() -> None:
    unit, _ = build({"pattern": r"^\d{4}-\d\d-\d\d ", "negate": True})
    lines = ["2026-01-01 a", "b", "c", "2026-01-02 d"]
    assert messages(unit.process(events(lines)) + unit.flush()) == [
        "2026-01-01 a\nb\nc",
        "2026-01-02 d",
    ]


def test_what_next_joins_a_line_to_the_one_after_it() -> None:
    unit, _ = build({"pattern": r"\\$", "what": "next"})
    lines = ["one \\", "two \\", "three", "alone", "x \\"]
    out = unit.process(events(lines))
    assert messages(out) == ["one \\\ntwo \\\nthree", "alone"]
    assert messages(unit.flush()) == ["x \\"]


def test_lines_join_only_within_their_stream() -> None:
    unit, _ = build({"pattern": r"^\s", "stream_key": ["path"]})
    batch = [
        {"message": "a1", "path": "a"},
        {"message": "b1", "path": "b"},
        {"message": " a2", "path": "a"},
        {"message": " b2", "path": "b"},
    ]
    assert sorted(messages(unit.process(batch) + unit.flush())) == ["a1\n a2", "b1\n b2"]


def test_the_timeout_releases_a_quiet_group_and_later_lines_are_split() -> None:
    clock = ManualClock()
    unit, registry = build({"pattern": r"^\s", "timeout_secs": 1.0}, clock)
    assert unit.process(events(["head", " body"])) == []
    clock.advance(0.5)
    assert unit.tick(clock.monotonic()) == []
    clock.advance(0.5)
    assert messages(unit.tick(clock.monotonic())) == ["head\n body"]
    assert registry["ml"].events_out == 1
    (late,) = unit.process(events([" late"])) + unit.flush()
    assert late["tags"] == ["_multilinesplit"]


def test_bounds_cut_a_group_and_tag_both_parts() -> None:
    unit, _ = build({"pattern": r"^\s", "max_lines": 2})
    out = unit.process(events(["h", " 1", " 2", " 3"])) + unit.flush()
    assert messages(out) == ["h\n 1", " 2\n 3"]
    assert [event["tags"] for event in out] == [
        ["multiline", "_multilinelimit"],
        ["_multilinesplit", "multiline"],
    ]


def test_a_nested_source_field_and_a_separator() -> None:
    unit, _ = build({"pattern": r"^\+", "source": "[log][text]", "separator": " | "})
    batch: Batch = [{"log": {"text": "a"}}, {"log": {"text": "+b"}}, {"log": {"text": "c"}}]
    out = unit.process(batch) + unit.flush()
    assert [event["log"]["text"] for event in out] == ["a | +b", "c"]


def test_an_event_without_text_ends_its_streams_group() -> None:
    unit, _ = build({"pattern": r"^\s"})
    out = unit.process([{"message": "a", "seq": 1}, {"seq": 2}, {"message": " b", "seq": 3}])
    out += unit.flush()
    assert [event["seq"] for event in out] == [1, 2, 3]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"pattern": "(unclosed"}, "pattern '(unclosed' is not a valid regex"),
        ({"pattern": "x", "what": "after"}, "what"),
        ({"pattern": "x", "max_bytes": 0}, "max_bytes"),
        ({}, "pattern: required key is missing"),
    ],
)
def test_config_errors_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(config)
    assert message in str(caught.value)


# --------------------------------------------------------------------------- properties

LINES = st.lists(
    st.one_of(
        st.text(alphabet=" abc\té€", max_size=30),
        st.sampled_from(["", " ", "  indented", "2026-03-02 09:15:01.000 42 INFO a [-] x"]),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    lines=LINES,
    max_lines=st.integers(1, 6),
    max_bytes=st.integers(1, 80),
    what=st.sampled_from(["previous", "next"]),
    negate=st.booleans(),
    streams=st.integers(1, 3),
)
def test_multiline_never_exceeds_its_bounds_and_accounts_for_every_line(
    lines: list[str], max_lines: int, max_bytes: int, what: str, negate: bool, streams: int
) -> None:
    unit, registry = build(
        {
            "pattern": r"^\s",
            "negate": negate,
            "what": what,
            "max_lines": max_lines,
            "max_bytes": max_bytes,
            "stream_key": ["path"],
        }
    )
    batch = [{"message": line, "path": n % streams} for n, line in enumerate(lines)]
    out = (
        unit.process(batch[: len(batch) // 2])
        + unit.tick(10.0)
        + unit.process(batch[len(batch) // 2 :])
        + unit.flush()
    )
    for event in out:
        text = event["message"]
        if "multiline" in event.get("tags", []):
            assert text.count("\n") + 1 <= max_lines
            assert len(text.encode("utf-8")) <= max_bytes
    assert len(out) + registry["ml"].dropped_total == len(lines)
    for stream in range(streams):  # every line kept, in its stream's order
        kept = [part for e in out if e["path"] == stream for part in e["message"].split("\n")]
        assert kept == lines[stream::streams]


@settings(max_examples=150, deadline=None)
@given(lines=LINES, max_lines=st.integers(1, 6), max_bytes=st.integers(1, 120))
def test_parse_multiline_never_exceeds_its_bounds(
    lines: list[str], max_lines: int, max_bytes: int
) -> None:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [
                {
                    "type": "parse",
                    "multiline_max_lines": max_lines,
                    "multiline_max_bytes": max_bytes,
                }
            ],
            "sinks": [{"type": "stdout"}],
        }
    )
    registry = Registry()
    unit = parsed.filters[0].build("p", BuildContext(registry=registry, clock=ManualClock()))
    out = unit.process([{"message": line} for line in lines]) + unit.flush()
    for event in out:
        if "multiline" in event.get("tags", []):
            assert event["message"].count("\n") + 1 <= max_lines
            assert len(event["message"].encode("utf-8")) <= max_bytes
    assert len(out) + registry["p"].dropped_total == len(lines)
