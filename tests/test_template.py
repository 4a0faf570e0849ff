"""Logstash-style templates: fields, @timestamp dates in UTC, index-name sanitising."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from logstream.template import (
    INVALID_INDEX_NAME,
    compile_index_template,
    compile_template,
    sanitize_index_name,
)


def render(source: str, event: dict[str, Any]) -> str:
    return compile_template(source).render(event)


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("source", "timestamp", "expected"),
    [
        ("logstash-%{+YYYY.MM.dd}", "2026-11-24T10:00:00.000Z", "logstash-2026.11.24"),
        ("logstash-%{+yyyy.MM.dd}", "2026-01-05T00:00:00Z", "logstash-2026.01.05"),
        ("%{+YYYY-MM-dd'T'HH:mm:ss}", "2026-11-24T10:20:30.123Z", "2026-11-24T10:20:30"),
        ("%{+yy/MM}", "2026-11-24T10:00:00Z", "26/11"),
        ("%{+xxxx.ww}", "2027-01-01T12:00:00Z", "2026.53"),  # ISO week-year and week
        ("%{+xxxx.ww}", "2026-11-24T12:00:00Z", "2026.48"),
        ("%{+'it''s' YYYY}", "2026-11-24T12:00:00Z", "it's 2026"),
        ("%{+YYYY.MM.dd}", "2026-11-24T10:00:00.123456789Z", "2026.11.24"),  # nanoseconds
    ],
)
def test_date_tokens_format_the_timestamp(source: str, timestamp: str, expected: str) -> None:
    assert render(source, {"@timestamp": timestamp}) == expected


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-24T01:30:00+02:00", "2026.11.23 23"),  # east of UTC: the day before
        ("2026-11-24T23:30:00-05:00", "2026.11.25 04"),  # west of UTC: the day after
        ("2026-11-24T23:30:00+0000", "2026.11.24 23"),
        ("2026-11-24T10:00:00", "2026.11.24 10"),  # no offset: taken as UTC
        ("2026-12-31T23:59:59.999+01:00", "2026.12.31 22"),
    ],
)
def test_timestamps_with_an_offset_are_converted_to_utc(timestamp: str, expected: str) -> None:
    assert render("%{+YYYY.MM.dd HH}", {"@timestamp": timestamp}) == expected


def test_the_date_cache_keeps_days_and_hours_apart() -> None:
    day = compile_template("%{+YYYY.MM.dd}")
    hour = compile_template("%{+dd HH:mm}")
    stamps = ["2026-11-24T23:59:59.999Z", "2026-11-25T00:00:00.000Z", "2026-11-24T00:00:00.000Z"]
    assert [day.render({"@timestamp": s}) for s in stamps * 2] == [
        "2026.11.24",
        "2026.11.25",
        "2026.11.24",
    ] * 2
    assert [hour.render({"@timestamp": s}) for s in stamps * 2] == [
        "24 23:59",
        "25 00:00",
        "24 00:00",
    ] * 2


@pytest.mark.parametrize("event", [{}, {"@timestamp": "yesterday"}, {"@timestamp": "bad Z"}])
def test_a_missing_or_bad_timestamp_means_now(event: dict[str, object]) -> None:
    before = dt.datetime.now(dt.UTC).strftime("%Y.%m.%d")
    got = render("%{+YYYY.MM.dd}", event)
    after = dt.datetime.now(dt.UTC).strftime("%Y.%m.%d")
    assert got in (before, after)


def test_a_numeric_timestamp_is_epoch_seconds() -> None:
    assert render("%{+YYYY.MM.dd HH}", {"@timestamp": 1_795_000_000}) == "2026.11.18 11"


@pytest.mark.parametrize("source", ["%{+YYYY.MM.dd.SSS}", "%{+%s}", "%{+EEE}", "%{+YYYY 'x}"])
def test_an_unsupported_date_format_is_an_error_when_compiling(source: str) -> None:
    with pytest.raises(ValueError, match="date format"):
        compile_template(source)


# --------------------------------------------------------------------------- fields


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("logs-%{type}", "logs-nginx"),
        ("%{[kubernetes][namespace]}-app", "prod-app"),
        ("%{[type]}", "nginx"),
        ("%{[tags][0]}/%{[tags][-1]}", "a/b"),
        ("%{tags}", "a,b"),
        ("%{count} %{ratio} %{ok}", "3 0.5 true"),
        ("%{kubernetes}", '{"namespace":"prod","labels":{"app":"x"}}'),
        ("%{a.b}", "dotted"),  # dots are part of a top-level name, as in Logstash
        ("%{type}%{type}", "nginxnginx"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_fields_are_interpolated(source: str, expected: str) -> None:
    event = {
        "type": "nginx",
        "kubernetes": {"namespace": "prod", "labels": {"app": "x"}},
        "tags": ["a", "b"],
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "a.b": "dotted",
    }
    assert render(source, event) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("logs-%{host}", "logs-%{host}"),
        ("logs-%{nothing}", "logs-%{nothing}"),  # null counts as missing
        ("%{[kubernetes][pod]}-x", "%{[kubernetes][pod]}-x"),
        ("%{[tags][5]}", "%{[tags][5]}"),
        ("%{[type][sub]}", "%{[type][sub]}"),  # type is a string, not an object
        ("%{type}-%{host}", "nginx-%{host}"),
    ],
)
def test_a_missing_field_leaves_the_reference_as_written(source: str, expected: str) -> None:
    event: dict[str, Any] = {"type": "nginx", "nothing": None, "kubernetes": {}, "tags": ["a"]}
    assert render(source, event) == expected


def test_a_compiled_template_knows_whether_it_depends_on_the_event() -> None:
    assert compile_template("logs").constant
    assert not compile_template("logs-%{type}").constant
    assert not compile_template("logs-%{+YYYY}").constant
    assert compile_template("%{type}-%{[a][b]}-%{+YYYY}").fields == ("type", "[a][b]")


def test_date_and_fields_mix_in_one_template() -> None:
    event = {"@timestamp": "2026-11-24T10:00:00Z", "type": "nginx", "env": "prod"}
    assert render("%{env}-%{type}-%{+YYYY.MM}-%{+dd}", event) == "prod-nginx-2026.11-24"


# --------------------------------------------------------------------------- index names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("logstash-2026.11.24", "logstash-2026.11.24"),
        ("Logs-Web 1", "logs-web_1"),
        ('a\\b/c*d?e"f<g>h|i,j#k:l', "a_b_c_d_e_f_g_h_i_j_k_l"),
        ("_-+logs", "logs"),
        ("+_x_", "x_"),
        ("logs-%{host}", "logs-%{host}"),
        ("ÄPFEL", "äpfel"),
        (".hidden", ".hidden"),
        ("", INVALID_INDEX_NAME),
        ("___", INVALID_INDEX_NAME),
        (".", INVALID_INDEX_NAME),
        ("..", INVALID_INDEX_NAME),
        ("x" * 300, "x" * 255),
        ("é" * 200, "é" * 127),  # cut at 255 bytes, on a character boundary
    ],
)
def test_index_names_are_made_valid_for_elasticsearch(name: str, expected: str) -> None:
    assert sanitize_index_name(name) == expected


def test_an_index_template_sanitises_what_events_put_in_it() -> None:
    template = compile_index_template("Logs-%{host}-%{+YYYY.MM.dd}")
    stamp = "2026-11-24T10:00:00Z"
    assert template.render({"host": "Web 1/a", "@timestamp": stamp}) == "logs-web_1_a-2026.11.24"
    assert template.render({"host": "_x", "@timestamp": stamp}) == "logs-_x-2026.11.24"
    assert template.render({"@timestamp": stamp}) == "logs-%{host}-2026.11.24"
    assert compile_index_template("%{host}").render({"host": "__"}) == INVALID_INDEX_NAME


def test_a_constant_index_that_is_not_valid_is_an_error_naming_a_fix() -> None:
    with pytest.raises(ValueError, match="'my_logs'"):
        compile_index_template("My Logs")
    assert compile_index_template("my-logs").render({}) == "my-logs"
