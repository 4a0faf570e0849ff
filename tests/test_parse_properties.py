"""Parsers and the parse filter never raise, whatever text or bytes arrive."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.clock import ManualClock
from logstream.config import parse_config
from logstream.metrics import Registry
from logstream.parsers import build_parsers
from logstream.severity import NAMES
from logstream.units import BuildContext

_, PARSERS = build_parsers(ManualClock())

# Lines shaped like the formats, with random (often impossible) values, so the
# parsers' deeper paths run too: month 13, February 30, huge PIDs, odd escapes.
SHAPED = st.one_of(
    st.from_regex(
        r"\A\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d{3}( \d{1,12})? [A-Z]{1,9} \S{0,9}"
        r"( \[[^\]]{0,12}\])?( .{0,30})?\Z"
    ),
    st.from_regex(
        r"\A(<\d{1,4}>)?[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(\.\d{1,7})? \S{0,8} .{0,40}\Z"
    ),
    st.from_regex(
        r"\A<\d{1,3}>\d \S{1,30} \S{1,9} \S{1,9} \S{1,5} \S{1,5} (-|\[.{0,30}\])( .{0,9})?\Z"
    ),
    st.from_regex(
        r'\A\S{1,9} \S \S \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] ".{0,20}" '
        r"[\d-]{1,3} [\d-]{1,5}.{0,30}\Z"
    ),
    st.from_regex(
        r"\A\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d(\.\d{1,6})? \d{4}\] \[[\w:]{1,12}\] .{0,40}\Z"
    ),
    st.from_regex(r"\A\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} p=\d{1,12} u=\S{0,5} \| .{0,40}\Z"),
    st.from_regex(r"\A(TASK|PLAY|ok|changed|fatal|\S{1,9} \|)[ :\[].{0,40}\Z"),
    st.from_regex(r"\A-- .{0,60} --\Z"),
    st.text(max_size=200),
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "event",
                    "stdout",
                    "created",
                    "failed",
                    "changed",
                    "status",
                    "ansible_type",
                    "ansible_changed",
                    "event_data",
                    "host_name",
                    "x",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(line=SHAPED)
def test_no_parser_raises_on_any_line(line: str) -> None:
    for parser in PARSERS.values():
        fields = parser.parse(line, {})
        if fields is not None:
            assert fields["format"] == parser.name
            assert fields.get("level", "INFO") in NAMES
            stamp = fields.get("@timestamp")
            assert stamp is None or (len(stamp) == 24 and stamp.endswith("Z"))


@settings(max_examples=200, deadline=None)
@given(value=JSONISH)
def test_no_parser_raises_on_any_event_or_json_message(value: Any) -> None:
    event = value if isinstance(value, dict) else {"message": value}
    line = json.dumps(value)  # big integers too, which orjson refuses to read
    for parser in PARSERS.values():
        parser.parse(line, dict(event))
        parser.parse("", dict(event))


CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "format": st.sampled_from(["auto", *PARSERS]),
        "fields": st.sampled_from(["default", "ecs"]),
        "multiline": st.booleans(),
        "multiline_max_lines": st.integers(1, 4),
        "multiline_max_bytes": st.integers(1, 64),
        "max_streams": st.integers(1, 3),
        "redetect_after_lines": st.integers(1, 3),
        "keep_original": st.booleans(),
        "inherit_level": st.booleans(),
        "timezone": st.sampled_from(["UTC", "Europe/Paris", "America/St_Johns"]),
    },
)
MESSAGES = st.one_of(SHAPED, st.binary(max_size=60), st.none(), st.integers(), JSONISH)


@settings(max_examples=150, deadline=None)
@given(
    config=CONFIGS,
    batches=st.lists(
        st.lists(st.tuples(MESSAGES, st.sampled_from(["a", "b", "c", None])), max_size=12),
        max_size=4,
    ),
)
def test_the_filter_never_raises_and_accounts_for_every_event(
    config: dict[str, Any], batches: list[list[tuple[Any, Any]]]
) -> None:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse", **config}],
            "sinks": [{"type": "stdout"}],
        }
    )
    registry = Registry()
    clock = ManualClock()
    unit = parsed.filters[0].build("p", BuildContext(registry=registry, clock=clock))
    count = 0
    out = []
    for batch in batches:
        events = [{"message": message, "path": path} for message, path in batch]
        count += len(events)
        out += unit.process(events)
        clock.advance(0.7)
        out += unit.tick(clock.monotonic())
    out += unit.flush()
    assert len(out) + registry["p"].dropped_total == count
    assert all(isinstance(event, dict) for event in out)
