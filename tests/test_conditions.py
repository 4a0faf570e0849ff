"""The condition language: grammar, meaning, compile errors, and that nothing raises."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.conditions import ConditionError, compile_condition


def holds(source: str, event: dict[str, Any]) -> bool:
    # The unguarded predicate: a passing test proves the safety net was not needed.
    return compile_condition(source).unguarded(event)


# --------------------------------------------------------------------------- severity


@pytest.mark.parametrize("spelling", ["WARNING", "warn", "Warning", "WRN", " warning ", 30])
def test_level_at_least_warning_holds_for_every_spelling_of_warning(spelling: object) -> None:
    assert holds("level >= WARNING", {"level": spelling})


@pytest.mark.parametrize("spelling", ["info", "DEBUG", "notice", "audit", "trace", 20])
def test_level_at_least_warning_fails_below_warning(spelling: object) -> None:
    assert not holds("level >= WARNING", {"level": spelling})


@pytest.mark.parametrize("value", [None, "chatty", ["ERROR"], {"name": "ERROR"}, True, 1.5])
def test_a_level_that_names_no_severity_is_neither_above_nor_below(value: object) -> None:
    event = {"level": value}
    assert not holds("level >= DEBUG", event)
    assert not holds("level < CRITICAL", event)


def test_a_missing_level_is_not_ordered() -> None:
    assert not holds("level >= TRACE", {})
    assert not holds("level < CRITICAL", {})


def test_level_against_a_quoted_name_compares_on_the_severity_scale() -> None:
    assert holds('level > "warn"', {"level": "err"})
    assert not holds("level > 'warn'", {"level": "WARNING"})


def test_severity_equality_ignores_spelling() -> None:
    assert holds("level == ERROR", {"level": "err"})
    assert holds("level != ERROR", {"level": "warn"})
    assert holds("level in [ERROR, CRITICAL]", {"level": "fatal"})
    assert not holds("level in [ERROR, CRITICAL]", {"level": "warn"})


def test_any_field_compares_on_the_scale_against_a_severity_name() -> None:
    assert holds("[syslog][severity] >= ERROR", {"syslog": {"severity": "crit"}})


def test_severity_aliases_are_literals_only_in_upper_case() -> None:
    assert holds("level >= WARN", {"level": "error"})
    assert holds("warn == 'x'", {"warn": "x"})  # a field named warn


def test_a_lower_case_severity_against_level_is_a_compile_error_that_suggests_the_fix() -> None:
    with pytest.raises(ConditionError, match=r"'warning' is read as a field name; write WARNING"):
        compile_condition("level >= warning")


def test_level_against_a_string_that_names_no_severity_is_a_compile_error() -> None:
    with pytest.raises(ConditionError, match=r"'loud' is not a severity .* at column 10"):
        compile_condition("level >= 'loud'")


# --------------------------------------------------------------------------- values


def test_equality_compares_strings_with_strings() -> None:
    assert holds('host == "web-1"', {"host": "web-1"})
    assert not holds('host == "web-1"', {"host": "web-2"})
    assert not holds('host == "1"', {"host": 1})


def test_a_number_literal_reads_a_numeric_string_as_a_number() -> None:
    assert holds("status >= 500", {"status": "503"})
    assert holds("status == 503", {"status": "503"})
    assert holds("status == 503", {"status": 503.0})
    assert not holds("status >= 500", {"status": "oops"})
    assert not holds("status >= 500", {"status": "inf"})


def test_booleans_are_not_numbers() -> None:
    assert not holds("flag == 1", {"flag": True})
    assert holds("flag == true", {"flag": True})
    assert not holds("flag == true", {"flag": 1})
    assert not holds("a == b", {"a": 1, "b": True})


def test_null_equals_a_missing_or_null_field() -> None:
    assert holds("x == null", {})
    assert holds("x == null", {"x": None})
    assert not holds("x == null", {"x": 0})


def test_negations_are_exact_so_a_missing_field_differs_from_everything() -> None:
    assert holds('x != "a"', {})
    assert holds('"a" not in tags', {})
    assert holds("x !~ /a/", {})


def test_ordering_mixed_types_is_false_both_ways() -> None:
    event = {"a": "text", "b": 3}
    assert not holds("a < b", event)
    assert not holds("a >= b", event)


def test_strings_order_by_code_point() -> None:
    assert holds('host < "m"', {"host": "db-1"})
    assert holds("a < b", {"a": "apple", "b": "banana"})


def test_a_literal_on_the_left_mirrors_the_comparison() -> None:
    assert holds("500 <= status", {"status": 503})
    assert holds("ERROR <= level", {"level": "critical"})
    assert holds('"web-1" == host', {"host": "web-1"})


def test_in_a_list_literal_is_membership() -> None:
    assert holds('host in ["a", "b"]', {"host": "b"})
    assert holds("code in [1, 2.5, true]", {"code": 2.5})
    assert not holds("code in [1, 2]", {"code": True})
    assert not holds("code in []", {"code": 1})


def test_in_a_field_is_list_membership_substring_or_key() -> None:
    assert holds('"audit" in tags', {"tags": ["x", "audit"]})
    assert holds('"time" in message', {"message": "timeout"})
    assert holds('"user" in meta', {"meta": {"user": 1}})
    assert not holds('"a" in n', {"n": 5})
    assert holds("level in tags", {"level": "x", "tags": ["x"]})
    assert holds("a in [b]", {"a": 1, "b": [1]})  # [b] holds a name: it is the field b


def test_regex_searches_strings_and_numbers_and_is_not_anchored() -> None:
    assert holds("message =~ /time(out)?/", {"message": "a timeout"})
    assert holds("status =~ /^5/", {"status": 503})
    assert not holds("message =~ /^time/", {"message": "a timeout"})
    assert holds(r"path =~ /^\/api\//", {"path": "/api/v1"})
    assert holds('message =~ "(?i)ERROR"', {"message": "an error"})


def test_exists_is_true_for_a_present_null_field() -> None:
    assert holds("exists x", {"x": None})
    assert not holds("exists x", {})
    assert holds("exists [a][b]", {"a": {"b": None}})
    assert not holds("exists [a][b]", {"a": "not an object"})


def test_a_bare_field_is_a_truth_test() -> None:
    assert holds("[@metadata][debug]", {"@metadata": {"debug": 1}})
    assert not holds("flag", {"flag": []})
    assert not holds("flag", {})


def test_nested_paths_index_lists_and_objects() -> None:
    event = {"tags": ["first", "last"], "a": {"0": "zero", "b": {"c": 7}}}
    assert holds('[tags][0] == "first"', event)
    assert holds('[tags][-1] == "last"', event)
    assert holds('[a][0] == "zero"', event)
    assert holds("[a][b][c] > 6", event)
    assert not holds("[tags][5] == 1", event)


def test_bare_names_may_hold_at_signs_dots_and_dashes() -> None:
    event = {"@timestamp": "2026-11-24T10:00:00Z", "log.level": "x", "x-request-id": "r"}
    assert holds('@timestamp >= "2026-11-24"', event)
    assert holds('log.level == "x" and x-request-id == "r"', event)


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    event = {"a": 1, "b": 0, "c": 0}
    assert holds("a == 1 or b == 1 and c == 1", event)
    assert not holds("(a == 1 or b == 1) and c == 1", event)
    assert holds("not b == 1 and a == 1", event)
    assert not holds("not (b == 0 and a == 1)", event)
    assert holds("not not a", event)


def test_a_compiled_condition_is_callable_and_keeps_its_source() -> None:
    condition = compile_condition("level >= ERROR")
    assert condition({"level": "error"}) is True
    assert condition.source == "level >= ERROR"


def test_the_safety_net_turns_an_exception_from_an_odd_value_into_false() -> None:
    class Angry(str):
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = str.__hash__

    assert compile_condition('x == "a"').test({"x": Angry("a")}) is False


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("level >= )", r"unexpected '\)' at column 10 in condition 'level >= \)'"),
        ("level >= ", "unexpected end of condition at column 10"),
        ("(a == 1", "unexpected end of condition at column 8 .*: expected '\\)'"),
        ("a = 1", "unexpected '=' at column 3 .*: use == to compare"),
        ("a && b", "unexpected '&' at column 3 .*: use and"),
        ("a == 1 b", "unexpected 'b' at column 8"),
        ("a == b == c", "unexpected '==' at column 8"),
        ("'open", "unterminated string starting at column 1"),
        ("m =~ /open", "unterminated regex starting at column 6"),
        ("m =~ /(/", "bad regex /\\(/ at column 6 .*: missing \\)"),
        ("m =~ 5", "unexpected '5' at column 6 .*: expected a /regex/ or a string"),
        ("/x/", "a regex \\(/x/\\) only follows =~ or !~ at column 1"),
        ("a in 5", "'in' needs a list, a string or a field on its right, not 5 at column 3"),
        ("a < true", "'<' orders numbers, strings and severities, not true at column 5"),
        ("a in [b, 1]", "unexpected 'b' at column 7 .*: expected a literal"),
        ("a in [1, b]", "unexpected 'b' at column 10 .*: expected a literal"),
        ("exists 'x'", "unexpected \"'x'\" at column 8 .*: expected a field after exists"),
        ("", "empty condition at column 1"),
        ("   ", "empty condition"),
        ("a ]", "unexpected ']' at column 3"),
        ("n == " + "9" * 5000, "number '9999.*' too long"),
        ("[a", "unexpected '\\[' at column 1|unexpected"),
        ("not " * 70 + "a", "nested more than 64 deep"),
        ("(" * 70 + "a" + ")" * 70, "nested more than 64 deep"),
    ],
)
def test_compile_errors_name_the_bad_token_and_its_column(source: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        compile_condition(source)


def test_a_condition_error_is_a_value_error_so_config_validation_reports_it() -> None:
    assert issubclass(ConditionError, ValueError)


# --------------------------------------------------------------------------- properties

# Text made of the language's own pieces finds more paths through the parser than
# arbitrary characters do.
PIECES = st.sampled_from(
    [
        "level",
        "host",
        "[a][b]",
        "[tags][0]",
        "@timestamp",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "=~",
        "!~",
        "in",
        "not",
        "and",
        "or",
        "exists",
        "(",
        ")",
        "[",
        "]",
        ",",
        "'x'",
        '"y"',
        "1",
        "-2.5",
        "1e3",
        "true",
        "false",
        "null",
        "WARNING",
        "ERROR",
        "/a+/",
        "/(/",
        "warn",
        " ",
        "=",
        "&",
        "'",
        "/",
        "\\",
        "[1, 2]",
        '["a"]',
    ]
)
SOURCES = st.one_of(st.text(max_size=60), st.lists(PIECES, max_size=14).map(" ".join))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(["level", "host", "a", "b", "tags", "@timestamp", "x", "message"])
EVENTS = st.dictionaries(FIELD_NAMES | st.text(max_size=4), JSON, max_size=6)

VALID = st.sampled_from(
    [
        "level >= WARNING",
        "level in [ERROR, CRITICAL] or host == 'web-1'",
        "[a][b] > 3 and not exists x",
        '"audit" in tags or message =~ /fail/',
        "a == b or a < b or a != 1.5",
        "[tags][0] !~ /x/ and b not in [1, 'two', null, true]",
        "a and (b or not x)",
        "level > 'info' and [a][0] == null",
        "x in a or 2 <= b",
    ]
)


@settings(max_examples=400, deadline=None)
@given(SOURCES)
def test_compiling_any_text_raises_nothing_but_a_condition_error(source: str) -> None:
    with contextlib.suppress(ConditionError):
        compile_condition(source)


@settings(max_examples=300, deadline=None)
@given(VALID, EVENTS)
def test_evaluating_on_any_json_event_never_raises_and_gives_a_bool(
    source: str, event: dict[str, Any]
) -> None:
    assert compile_condition(source).unguarded(event) in (True, False)


@settings(max_examples=300, deadline=None)
@given(SOURCES, EVENTS)
def test_whatever_compiles_evaluates_on_any_json_event_without_raising(
    source: str, event: dict[str, Any]
) -> None:
    try:
        condition = compile_condition(source)
    except ConditionError:
        return
    assert condition.unguarded(event) in (True, False)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_negated_operators_are_the_exact_negations(event: dict[str, Any]) -> None:
    for positive, negative in [
        ('a == "x"', 'a != "x"'),
        ("a == b", "a != b"),
        ('"x" in tags', '"x" not in tags'),
        ("a =~ /x/", "a !~ /x/"),
        ("level == ERROR", "level != ERROR"),
    ]:
        assert holds(positive, event) is not holds(negative, event)
