"""The accounting record's exact shape (subscribers and `logstream tail` read it), and the
small helpers around it: gaps mutation testing (scripts/mutate) found in the unit tests."""

from __future__ import annotations

import datetime

from logstream.sampling import (
    _CACHE_MAX,
    LEVEL_NAMES,
    LevelIndexer,
    accounting_record,
    key_hasher,
    sum_by_name,
    timestamp,
)

# Severity order: TRACE, DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL.


def test_an_accounting_record_is_exactly_this() -> None:
    record = accounting_record(
        unit="mqtt",
        start_wall=1_700_000_000.0,
        end_wall=1_700_000_010.2504,
        suppressed={"sampled": [0, 5, 3, 0, 0, 0, 0], "rate_limited": [0, 0, 2, 1, 0, 0, 0]},
        kept=[0, 1, 4, 0, 0, 0, 1],
        sample_rates={"DEBUG": 10.0, "INFO": 2.5},
        topic="logs/web-1/INFO",
        extra={"host": "web-1", "type": "overridden"},
    )
    assert record == {
        "host": "web-1",
        "@timestamp": "2023-11-14T22:13:30.250Z",
        "@version": "1",
        "type": "logstream.accounting",
        "level": "NOTICE",
        "message": "mqtt: 11 events suppressed on logs/web-1/INFO in 10.25 s "
        "(sampled DEBUG 5, INFO 3; rate_limited INFO 2, NOTICE 1)",
        "logstream": {
            "format": 1,
            "unit": "mqtt",
            "topic": "logs/web-1/INFO",
            "from": "2023-11-14T22:13:20.000Z",
            "to": "2023-11-14T22:13:30.250Z",
            "window_secs": 10.25,
            "suppressed": {"DEBUG": 5, "INFO": 5, "NOTICE": 1},
            "sampled": {"DEBUG": 5, "INFO": 3},
            "rate_limited": {"INFO": 2, "NOTICE": 1},
            "kept": {"DEBUG": 1, "INFO": 4, "CRITICAL": 1},
            "sample_rates": {"DEBUG": 10, "INFO": 2.5},
        },
    }
    assert type(record["logstream"]["sample_rates"]["DEBUG"]) is int


def test_a_record_without_topic_or_suppressions_says_so_plainly() -> None:
    record = accounting_record(
        unit="sample",
        start_wall=0.0,
        end_wall=5.0,
        suppressed={"sampled": [0] * 7},
        kept=[0, 0, 2, 0, 0, 0, 0],
        sample_rates={},
    )
    assert record["message"] == "sample: 0 events suppressed in 5.0 s"
    assert "topic" not in record["logstream"]
    assert record["logstream"]["sampled"] == {}
    assert record["logstream"]["suppressed"] == {}
    assert record["@timestamp"] == "1970-01-01T00:00:05.000Z"


def test_sum_by_name_adds_per_severity_in_severity_order() -> None:
    total = sum_by_name({"a": {"ERROR": 1, "DEBUG": 2}, "b": {"DEBUG": 3, "TRACE": 0.5}})
    assert total == {"TRACE": 0.5, "DEBUG": 5, "ERROR": 1}
    assert list(total) == ["TRACE", "DEBUG", "ERROR"]


def test_timestamp_has_milliseconds_and_utc() -> None:
    assert timestamp(1_700_000_000.0) == "2023-11-14T22:13:20.000Z"
    assert timestamp(1_700_000_000.9999) == "2023-11-14T22:13:20.999Z"
    assert timestamp(86_400.007) == "1970-01-02T00:00:00.007Z"


def test_key_hashes_are_stable_for_several_fields_and_for_values_json_cannot_hold() -> None:
    assert key_hasher(["a", "b"])({"a": 1, "b": 2}) == 0.7705729840557047
    one = key_hasher(["k"])
    assert one({"k": {1: "x"}}) == 0.3711570735774161  # a non-string key
    assert one({"k": datetime.date(2026, 1, 1)}) == 0.8859386247845895  # str() of the value
    assert one({}) == 0.4510299442281778  # a missing field hashes as null


def test_the_level_cache_stays_bounded_and_keeps_answering_after_a_reset() -> None:
    index = LevelIndexer(field="severity")
    assert index({"severity": "ERROR", "level": "DEBUG"}) == LEVEL_NAMES.index("ERROR")
    for n in range(_CACHE_MAX * 2):
        assert index({"severity": f"custom-{n}"}) == LEVEL_NAMES.index("INFO")
        assert len(index._cache) <= _CACHE_MAX
    assert index({"severity": "warn"}) == LEVEL_NAMES.index("WARNING")
    assert index._cache["warn"] == LEVEL_NAMES.index("WARNING")  # remembered
    assert index({"severity": "ERROR"}) == LEVEL_NAMES.index("ERROR")
