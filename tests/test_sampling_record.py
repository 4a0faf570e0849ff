"""The accounting record's exact shape (subscribers and `logstream tail` read it), and the
small helpers around it: gaps mutation testing (scripts/mutate) found in the unit tests."""

from __future__ import annotations

from logstream.sampling import accounting_record, sum_by_name, timestamp

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
