"""The parse filter's behaviour around the parsers: streams, detection, multiline, accounting."""

from __future__ import annotations

from typing import Any

import pytest

from logstream.clock import ManualClock
from logstream.config import ConfigError, parse_config
from logstream.event import Batch
from logstream.metrics import Registry
from logstream.units import BuildContext, Filter
from tests.test_parsers import NOW

OSLO = "2026-03-02 09:15:{:02d}.000 42 INFO nova.api [-] request {}"
SYSLOG = "Jun 14 03:25:{:02d} web-3 app[7]: line {}"


def build(
    config: dict[str, Any] | None = None, clock: ManualClock | None = None
) -> tuple[Filter, Registry]:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse", **(config or {})}],
            "sinks": [{"type": "stdout"}],
        }
    )
    registry = Registry()
    ctx = BuildContext(registry=registry, clock=clock or ManualClock(wall_start=NOW))
    return parsed.filters[0].build("parse", ctx), registry


def events(lines: list[str], **fields: Any) -> Batch:
    return [{"message": line, "host": "h1", **fields} for line in lines]


def config_error(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        build(config)
    return str(caught.value)


# --------------------------------------------------------------------------- detection


def test_a_known_stream_does_not_guess_per_line() -> None:
    """A syslog-looking line inside an oslo stream is a continuation, not a new format."""
    unit, _ = build()
    out = unit.process(events([OSLO.format(1, 1), SYSLOG.format(2, 2), OSLO.format(3, 3)]))
    out += unit.flush()
    assert [event["format"] for event in out] == ["oslo", "oslo"]
    assert out[0]["message"] == "request 1\n" + SYSLOG.format(2, 2)


def test_a_stream_is_detected_again_after_a_run_of_unknown_lines() -> None:
    unit, _ = build({"redetect_after_lines": 3})
    lines = [OSLO.format(0, 0)] + [SYSLOG.format(n, n) for n in range(1, 7)]
    out = unit.process(events(lines)) + unit.flush()
    assert [event["format"] for event in out] == ["oslo", "syslog", "syslog", "syslog"]
    assert out[0]["message"].count("\n") == 3  # three lines folded before the switch
    assert [event["message"] for event in out[1:]] == ["line 4", "line 5", "line 6"]


def test_a_stream_detected_from_bare_xtrace_switches_at_the_first_timestamped_line() -> None:
    unit, _ = build()
    lines = ["+ ln -sf /opt/a.log /opt/b.log", "+ exec /usr/local/bin/nova-api", OSLO.format(1, 1)]
    out = unit.process(events(lines)) + unit.flush()
    assert [event["format"] for event in out] == ["console", "console", "oslo"]


def test_streams_are_detected_independently_and_keep_their_order() -> None:
    unit, _ = build()
    batch: Batch = []
    for n in range(1, 4):
        batch.append({"message": OSLO.format(n, n), "host": "h1", "path": "nova.log", "seq": n})
        batch.append(
            {"message": SYSLOG.format(n, n), "host": "h1", "path": "syslog", "seq": 10 + n}
        )
    out = unit.process(batch) + unit.flush()
    by_path: dict[str, list[tuple[int, str]]] = {}
    for event in out:
        by_path.setdefault(event["path"], []).append((event["seq"], event["format"]))
    assert by_path == {
        "nova.log": [(1, "oslo"), (2, "oslo"), (3, "oslo")],
        "syslog": [(11, "syslog"), (12, "syslog"), (13, "syslog")],
    }


def test_stream_key_can_name_a_connection_field() -> None:
    unit, _ = build({"stream_key": ["[conn][id]"]})
    batch = [
        {"message": "+ make", "conn": {"id": 1}},
        {"message": OSLO.format(1, 1), "conn": {"id": 2}},
        {"message": "  continued", "conn": {"id": 2}},
    ]
    out = unit.process(batch) + unit.flush()
    assert [(event["format"], event["message"]) for event in out] == [
        ("console", "+ make"),
        ("oslo", "request 1\n  continued"),
    ]


def test_a_forced_format_never_detects() -> None:
    unit, registry = build({"format": "syslog"})
    out = unit.process(events([OSLO.format(1, 1), SYSLOG.format(2, 2)]))
    assert out[0]["tags"] == ["_parsefailure"]
    assert out[1]["format"] == "syslog"
    assert registry["parse"].decode_issues["unparsed"] == 1


def test_formats_limits_what_detection_tries() -> None:
    unit, _ = build({"formats": ["syslog"]})
    out = unit.process(
        events([OSLO.format(1, 1)], path="a") + events(["<13>Jun 14 03:25:07 h a: x"])
    )
    assert out[0]["tags"] == ["_parsefailure"]
    assert out[1]["format"] == "syslog"


# --------------------------------------------------------------------------- failures, odd input


def test_unparsed_lines_are_tagged_counted_and_otherwise_untouched() -> None:
    unit, registry = build()
    batch = [{"message": "just some words", "level": "DEBUG", "host": "h1"}]
    out = unit.process(batch)
    assert out == [
        {"message": "just some words", "level": "DEBUG", "host": "h1", "tags": ["_parsefailure"]}
    ]
    assert registry["parse"].decode_issues == {"unparsed": 1}


def test_on_failure_null_adds_no_tag() -> None:
    unit, registry = build({"on_failure": None})
    out = unit.process([{"message": "event 1"}])
    assert out == [{"message": "event 1"}]
    assert registry["parse"].decode_issues == {"unparsed": 1}


def test_blank_lines_are_not_failures_and_take_the_stream_level() -> None:
    unit, registry = build({"format": "syslog"})
    out = unit.process(events(["<11>Jun 14 03:25:08 h backup: x", "", "   "]))
    assert [event.get("level") for event in out] == ["ERROR", "INFO", "INFO"]
    assert "tags" not in out[1]
    assert registry["parse"].decode_issues == {}


def test_bytes_are_decoded_and_bad_utf8_is_tagged() -> None:
    unit, registry = build()
    out = unit.process(
        [
            {"message": b"Jun 14 03:25:07 h app: caf\xc3\xa9", "path": "a"},
            {"message": b"Jun 14 03:25:08 h app: bad \xff byte", "path": "a"},
        ]
    )
    assert out[0]["message"] == "café"
    assert out[1]["message"] == "bad \ufffd byte"
    assert out[1]["tags"] == ["_utf8error"]
    assert registry["parse"].decode_issues == {"invalid_utf8": 1}


def test_events_without_text_pass_untouched_and_end_the_held_record() -> None:
    unit, _ = build()
    batch: Batch = [
        {"message": OSLO.format(1, 1), "seq": 1},
        {"message": None, "seq": 2},
        {"seq": 3},
        {"message": 12, "seq": 4},
    ]
    out = unit.process([dict(event) for event in batch]) + unit.flush()
    assert [event["seq"] for event in out] == [1, 2, 3, 4]
    assert out[1:] == batch[1:]


def test_the_source_may_be_another_field() -> None:
    unit, _ = build({"source": "[log][line]"})
    out = unit.process([{"log": {"line": SYSLOG.format(1, 1)}, "message": "not this"}])
    assert out[0]["program"] == "app"
    assert out[0]["message"] == "line 1"


def test_keep_original_keeps_the_raw_lines() -> None:
    unit, _ = build({"keep_original": True})
    lines = [OSLO.format(1, 1), "  more", SYSLOG.format(2, 2)]
    out = unit.process(events(lines[:2], path="a") + events(lines[2:], path="b")) + unit.flush()
    originals = {event["path"]: event["original"] for event in out}
    assert originals == {"a": "\n".join(lines[:2]), "b": lines[2]}


# --------------------------------------------------------------------------- multiline


def test_records_wait_for_their_next_line_or_the_timeout() -> None:
    clock = ManualClock(wall_start=NOW)
    unit, registry = build({"multiline_timeout_secs": 2.0}, clock)
    assert unit.process(events([OSLO.format(1, 1)])) == []
    clock.advance(1.0)
    assert unit.process(events(["  detail"])) == []
    clock.advance(1.5)
    assert unit.tick(clock.monotonic()) == []  # 1.5 s since the last line
    clock.advance(0.5)
    (due,) = unit.tick(clock.monotonic())
    assert due["message"] == "request 1\n  detail"
    assert registry["parse"].events_out == 1
    assert registry["parse"].dropped == {"merged": 1}
    # A continuation line arriving after the record went starts a split event.
    (split,) = unit.process(events(["  late detail"])) + unit.flush()
    assert (split["message"], split["tags"], split["level"]) == (
        "  late detail",
        ["_multilinesplit"],
        "INFO",
    )


def test_a_record_reaching_max_lines_is_cut_and_continued() -> None:
    unit, registry = build({"multiline_max_lines": 3})
    lines = [OSLO.format(1, 1)] + [f"  part {n}" for n in range(5)] + [OSLO.format(2, 2)]
    out = unit.process(events(lines)) + unit.flush()
    assert [event["message"].count("\n") + 1 for event in out] == [3, 3, 1]
    assert [event.get("tags") for event in out] == [
        ["multiline", "_multilinelimit"],
        ["_multilinesplit", "multiline"],
        None,
    ]
    assert len(out) + registry["parse"].dropped_total == len(lines)


def test_a_record_never_exceeds_max_bytes() -> None:
    unit, _ = build({"multiline_max_bytes": 40})
    lines = [OSLO.format(1, 1)] + ["  éééééééééé"] * 6
    out = unit.process(events(lines)) + unit.flush()
    assert all(len(event["message"].encode()) <= 40 for event in out)
    assert "".join(event["message"] for event in out).count("é") == 60


def test_multiline_off_lets_every_line_go_at_once() -> None:
    unit, registry = build({"multiline": False})
    out = unit.process(events([OSLO.format(1, 1), "  detail", OSLO.format(2, 2)]))
    assert [event.get("tags") for event in out] == [None, ["_parsefailure"], None]
    assert registry["parse"].decode_issues == {"unparsed": 1}


def test_single_line_formats_are_never_held() -> None:
    unit, _ = build()
    out = unit.process(events([SYSLOG.format(1, 1), "not syslog"]))
    assert [event.get("tags") for event in out] == [None, ["_parsefailure"]]


def test_the_least_recently_seen_stream_is_forgotten_and_its_record_released() -> None:
    unit, _ = build({"max_streams": 2})
    batch = [{"message": OSLO.format(n, n), "path": f"p{n}"} for n in range(3)]
    out = unit.process(batch)
    assert [event["path"] for event in out] == ["p0"]
    assert [event["path"] for event in unit.flush()] == ["p1", "p2"]


def test_flush_releases_every_held_record_and_counts_it() -> None:
    unit, registry = build()
    unit.process(events([OSLO.format(1, 1)], path="a") + events([OSLO.format(2, 2)], path="b"))
    assert len(unit.flush()) == 2
    assert registry["parse"].events_out == 2
    assert unit.flush() == []


def test_previous_level_is_inherited_within_the_stream_only() -> None:
    unit, _ = build()
    out = (
        unit.process(
            events(["2026-03-17 16:12:05.250 | ERROR: build failed"], path="a")
            + events(["2026-03-17 16:12:05.251 | see above"], path="b")
            + events(["2026-03-17 16:12:05.252 | cleaning up"], path="a")
        )
        + unit.flush()
    )
    out.sort(key=lambda event: event["@timestamp"])
    assert [(event["path"], event["level"]) for event in out] == [
        ("a", "ERROR"),
        ("b", "INFO"),
        ("a", "ERROR"),
    ]


def test_default_level_sets_the_level_of_first_lines_without_one() -> None:
    unit, _ = build({"default_level": "notice"})
    (event,) = unit.process(events(["2026-03-17 16:12:05.251 | hello"])) + unit.flush()
    assert event["level"] == "NOTICE"


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"format": "klingon"}, "unknown format 'klingon'"),
        ({"formats": ["oslo", "nope"]}, "formats[1]: unknown format 'nope'"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"default_level": "LOUD"}, "unknown severity 'LOUD'"),
        ({"stream_key": ["[a"]}, "stream_key[0]"),
        ({"multiline_max_lines": 0}, "multiline_max_lines"),
        ({"fields": "otel"}, "fields"),
        ({"colour": True}, "colour: unknown key"),
    ],
)
def test_config_errors_name_the_key_and_value(config: dict[str, Any], message: str) -> None:
    assert message in config_error(config)


def test_with_ecs_fields_conditions_compare_the_nested_level_on_the_scale() -> None:
    from logstream.conditions import compile_condition

    unit, _ = build({"fields": "ecs"})
    out = unit.process(events(["<12>Jun 14 03:25:08 h a: x", "<14>Jun 14 03:25:09 h a: y"]))
    warning_or_worse = compile_condition("[log][level] >= WARNING").test
    assert [warning_or_worse(event) for event in out] == [True, False]
