"""The sample filter: rates per level, stable keys, a byte budget, and accounting records."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from logstream.clock import ManualClock
from logstream.config import ConfigError, parse_config
from logstream.event import Batch
from logstream.filters.sample import SampleFilter, SampleFilterConfig
from logstream.metrics import Registry
from logstream.payload import ACCOUNTING_TYPE, is_accounting
from logstream.units import BuildContext


def build(clock: ManualClock | None = None, **settings: Any) -> tuple[SampleFilter, Registry]:
    registry = Registry()
    config = SampleFilterConfig.model_validate({"type": "sample", **settings})
    unit = config.build("sample", BuildContext(registry=registry, clock=clock or ManualClock()))
    return unit, registry


def mixed(count: int, start: int = 0) -> Batch:
    """60% DEBUG, 35% INFO, 4% WARNING, 1% ERROR, interleaved."""
    levels = ["DEBUG"] * 60 + ["INFO"] * 35 + ["WARNING"] * 4 + ["ERROR"]
    return [
        {"level": levels[(n * 37) % 100], "host": f"web-{n % 2}", "n": n, "message": "m" * 50}
        for n in range(start, start + count)
    ]


def by_level(events: Batch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event["level"]] = counts.get(event["level"], 0) + 1
    return counts


def test_per_level_rates_keep_every_warning_and_error_and_1_in_n_of_the_rest() -> None:
    unit, registry = build(levels={"WARNING": 1, "INFO": 10, "DEBUG": 100})
    out = unit.process(mixed(10_000))
    assert by_level(out) == {"ERROR": 100, "WARNING": 400, "INFO": 350, "DEBUG": 60}
    assert registry["sample"].dropped == {"sampled": 10_000 - 910}


def test_kept_events_carry_the_rate_they_stand_for_and_unsampled_ones_none() -> None:
    unit, _ = build(levels={"WARNING": 1, "INFO": 10, "DEBUG": 100})
    out = unit.process(mixed(1000))
    rates = {event["level"]: event.get("sample_rate") for event in out}
    assert rates == {"ERROR": None, "WARNING": None, "INFO": 10, "DEBUG": 100}


def test_a_rate_already_set_upstream_is_multiplied() -> None:
    unit, _ = build(rate=4)
    (event,) = unit.process([{"level": "INFO", "sample_rate": 10}])
    assert event["sample_rate"] == 40


def test_levels_apply_upwards_to_the_next_listed_and_below_the_lowest_use_rate() -> None:
    config = SampleFilterConfig.model_validate(
        {"type": "sample", "rate": 1000, "levels": {"error": 2, "info": 10}}
    )
    ratios = dict(
        zip(
            ["TRACE", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"],
            config.static_ratios(),
            strict=True,
        )
    )
    assert ratios == {
        "TRACE": 0.001,
        "DEBUG": 0.001,
        "INFO": 0.1,
        "NOTICE": 0.1,
        "WARNING": 0.1,
        "ERROR": 0.5,
        "CRITICAL": 1.0,  # above the highest listed level: kept in full
    }
    no_rate = SampleFilterConfig.model_validate({"type": "sample", "levels": {"INFO": 10}})
    assert no_rate.static_ratios()[0] == 0.1  # TRACE takes the lowest listed level's rate


def test_severities_above_the_highest_listed_are_kept_in_full() -> None:
    """Issue 14: ``levels: {DEBUG: 100, INFO: 10}`` thinned WARNING and ERROR 1 in 10 too."""
    unit, registry = build(levels={"DEBUG": 100, "INFO": 10})
    batch = [
        {"level": level, "n": n}
        for n in range(100)
        for level in ("DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL")
    ]
    kept = by_level(unit.process(batch))
    assert kept == {"DEBUG": 1, "INFO": 10, "NOTICE": 100, "WARNING": 100, "ERROR": 100,
                    "CRITICAL": 100}  # fmt: skip
    assert registry["sample"].dropped["sampled"] == 99 + 90
    # Listing a severity still thins it (and what lies above it up to the next listed).
    listed, _ = build(levels={"INFO": 10, "ERROR": 5})
    kept = by_level(listed.process([{"level": "ERROR"}] * 50 + [{"level": "CRITICAL"}] * 50))
    assert kept == {"ERROR": 10, "CRITICAL": 50}
    # A plain rate without levels still applies to every severity, as it says.
    every, _ = build(rate=10)
    assert by_level(every.process([{"level": "ERROR"}] * 50)) == {"ERROR": 5}


def test_check_prints_the_effective_rate_per_severity(tmp_path: Any) -> None:
    import subprocess
    import sys

    path = tmp_path / "sampled.yaml"
    path.write_text(
        "inputs: [{type: tcp, listen: '127.0.0.1:0'}]\n"
        "filters: [{type: sample, id: thin, levels: {DEBUG: 100, INFO: 10}}]\n"
        "sinks: [{type: stdout}]\n"
        f"state_dir: {tmp_path}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "logstream", "check", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(1 input, 1 filter, 1 sink)" in result.stdout
    assert (
        "filter thin keeps: TRACE 1/100, DEBUG 1/100, INFO 1/10, NOTICE all, WARNING all, "
        "ERROR all, CRITICAL all"
    ) in result.stdout


def test_systematic_sampling_keeps_the_first_event_and_exactly_1_in_n() -> None:
    unit, _ = build(rate=3)
    out = unit.process([{"level": "INFO", "n": n} for n in range(10)])
    assert [event["n"] for event in out] == [0, 3, 6, 9]


def test_events_without_a_known_level_count_as_unknown_level() -> None:
    unit, _ = build(levels={"INFO": 1, "DEBUG": 10}, unknown_level="DEBUG")
    out = unit.process([{"n": n} for n in range(20)] + [{"level": "chatty", "n": 99}])
    assert len(out) == 3


def test_key_sampling_gives_the_same_answer_for_the_same_key_in_every_filter() -> None:
    first, _ = build(ratio=0.25, key_fields=["trace"])
    second, _ = build(ratio=0.25, key_fields=["trace"])
    batch = [{"level": "INFO", "trace": f"t{n % 500}", "n": n} for n in range(5000)]
    kept_first = {e["trace"] for e in first.process([dict(e) for e in batch])}
    kept_second = {e["trace"] for e in second.process([dict(e) for e in batch])}
    assert kept_first == kept_second
    assert 0.2 * 500 < len(kept_first) < 0.3 * 500
    # All events of a kept trace are kept: whole traces, not pieces.
    kept_events = first.process([dict(e) for e in batch])
    assert len(kept_events) == 10 * len(kept_first)


def test_accounting_records_come_per_interval_and_group_with_counts_per_level() -> None:
    clock = ManualClock()
    unit, registry = build(
        clock,
        levels={"WARNING": 1, "INFO": 10, "DEBUG": 100},
        accounting_fields=["host"],
        accounting_interval_secs=10,
    )
    out = unit.process(mixed(1000))
    clock.advance(5)
    assert unit.tick(clock.monotonic()) == []  # not yet
    clock.advance(5)
    records = unit.tick(clock.monotonic())
    assert {r["host"] for r in records} == {"web-0", "web-1"}
    assert all(r["type"] == ACCOUNTING_TYPE and is_accounting(r) for r in records)
    sampled = sum(sum(r["logstream"]["sampled"].values()) for r in records)
    assert sampled == registry["sample"].dropped["sampled"] == 1000 - len(out)
    kept = sum(sum(r["logstream"]["kept"].values()) for r in records)
    assert kept == len(out)
    record = records[0]["logstream"]
    assert record["sample_rates"] == {"TRACE": 100, "DEBUG": 100, "INFO": 10, "NOTICE": 10}
    assert record["window_secs"] == 10.0
    assert "events suppressed" in records[0]["message"]
    assert unit.tick(clock.monotonic()) == []  # counts were reset
    orjson.dumps(records)  # records are plain JSON


def test_flush_emits_the_last_accounting_record_and_nothing_when_nothing_was_suppressed() -> None:
    unit, _ = build(levels={"INFO": 10})
    unit.process(mixed(100))
    (record,) = unit.flush()
    assert record["logstream"]["sampled"]
    quiet, _ = build(levels={"INFO": 10})
    quiet.process([{"level": "ERROR"}])
    assert quiet.flush() == []


def test_upstream_accounting_records_pass_untouched_and_uncounted() -> None:
    unit, registry = build(rate=1000)
    record = {"type": ACCOUNTING_TYPE, "level": "NOTICE", "logstream": {}}
    out = unit.process([{"level": "INFO"}, {"level": "INFO"}, dict(record)])
    assert out[-1] == record
    assert registry["sample"].dropped == {"sampled": 1}


def test_a_byte_budget_lowers_the_lowest_levels_first_and_keeps_errors() -> None:
    clock = ManualClock()
    unit, _ = build(clock, budget_bytes_per_sec=20_000, window_secs=1.0)
    kept: list[Batch] = []
    for second in range(15):
        kept.append(unit.process(mixed(1000, second * 1000)))
        clock.advance(1.0)
        unit.tick(clock.monotonic())
    last = kept[-1]
    size = sum(len(orjson.dumps(event)) for event in last)
    assert 0.9 * 20_000 <= size <= 20_000
    assert by_level(last)["ERROR"] == 10 and by_level(last)["WARNING"] == 40
    assert "DEBUG" not in by_level(last)


def test_sample_runs_in_a_pipeline_from_config() -> None:
    config = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "sample", "levels": {"WARNING": 1, "INFO": 10}}],
            "sinks": [{"type": "stdout"}],
        }
    )
    assert config.filters[0].type == "sample"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs at least one of rate, ratio, levels or budget_bytes_per_sec"),
        ({"rate": 0.5}, "rate keeps 1 in rate events and must be at least 1, value: 0.5"),
        ({"ratio": 0}, "ratio must be above 0 and at most 1, value: 0"),
        ({"rate": 2, "ratio": 0.5}, "give rate or ratio, not both"),
        ({"levels": {"LOUD": 2}}, "unknown severity 'LOUD'"),
        ({"levels": {"INFO": 0.5}}, "levels.INFO keeps 1 in N events"),
        ({"levels": {"WARN": 1, "warning": 2}}, "are the same severity"),
        ({"rate": 2, "colour": "red"}, "colour: unknown key"),
        ({"budget_bytes_per_sec": 0}, "budget_bytes_per_sec"),
    ],
)
def test_config_errors_name_the_key_and_the_value(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(
            {
                "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
                "filters": [{"type": "sample", **settings}],
                "sinks": [{"type": "stdout"}],
            }
        )
