"""Filters in the runtime: fail-closed filters dead-letter a batch they raised on,
and ``when`` applies a filter only to the events that match, in stream order."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from logstream.config import ConfigError, build_pipeline, parse_config
from logstream.event import Batch
from logstream.filters.drop import DropFilter
from logstream.filters.mutate import MutateFilter
from logstream.filters.redact import RedactFilter, RedactFilterConfig
from logstream.filters.sample import SampleFilter
from logstream.metrics import Registry
from logstream.pipeline import Pipeline, SinkRunner, SinkSettings
from logstream.units import BuildContext, Filter
from tests.support.units import CollectingSink, ExplodingFilter, ListInput


class RaisesOnBoom(Filter):
    """Test-only: tags events, but raises on a batch holding an event with ``boom``."""

    fails_closed = True

    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, registry.unit(name, "filter"))

    def process(self, batch: Batch) -> Batch:
        for event in batch:
            if "boom" in event:
                raise KeyError("boom")
            event["seen"] = True
        return batch


class BrokenRedact(RedactFilter):
    """Test-only: the real redact filter (its fails_closed) with a bug in process."""

    def process(self, batch: Batch) -> Batch:
        raise RuntimeError("redact bug")


def run(
    batches: list[Batch], filters: list[Filter], registry: Registry, dead_letters: Path | None
) -> CollectingSink:
    async def scenario() -> CollectingSink:
        sink = CollectingSink("out", registry)
        source = ListInput("list", registry, batches)
        pipeline = Pipeline(
            [source],
            filters,
            [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0.01))],
            registry=registry,
            filter_batch_max_events=10,
            dead_letter_dir=dead_letters,
        )
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)
        return sink

    return asyncio.run(scenario())


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# --------------------------------------------------------------------------- fail closed


def test_a_fail_closed_filter_dead_letters_the_batch_it_raised_on(tmp_path: Path) -> None:
    registry = Registry()
    batches: list[Batch] = [
        [{"n": n} for n in range(10)],
        [{"n": 10, "boom": 1}, *({"n": n} for n in range(11, 20))],
        [{"n": n} for n in range(20, 30)],
    ]
    sink = run(batches, [RaisesOnBoom("strict", registry)], registry, tmp_path)
    assert [e["n"] for e in sink.events] == [*range(10), *range(20, 30)]
    assert all(e["seen"] for e in sink.events)
    metrics = registry["strict"]
    assert metrics.dropped["filter_error"] == 10
    assert metrics.errors == 1
    path = tmp_path / "filter-strict.ndjson"
    records = read_ndjson(path)
    assert [r["event"]["n"] for r in records] == list(range(10, 20))
    assert records[0]["filter"] == "strict"
    assert records[0]["error"]["type"] == "KeyError"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it may hold unredacted secrets


def test_redact_fails_closed_so_an_error_never_lets_secrets_through(tmp_path: Path) -> None:
    registry = Registry()
    config = RedactFilterConfig.model_validate({"type": "redact"})
    redact = BrokenRedact("redact", BuildContext(registry=registry), config)
    secret = {"message": "login password=hunter2", "n": 1}
    sink = run([[secret]], [redact], registry, tmp_path)
    assert sink.events == []
    assert registry["redact"].dropped["filter_error"] == 1
    (record,) = read_ndjson(tmp_path / "filter-redact.ndjson")
    assert record["event"]["message"] == "login password=hunter2"


def test_which_filters_fail_closed() -> None:
    assert RedactFilter.fails_closed and DropFilter.fails_closed
    # Filters that add or reshape fail open; an unsampled batch loses nothing.
    assert not SampleFilter.fails_closed and not MutateFilter.fails_closed
    assert not Filter.fails_closed


def test_a_fail_open_filter_still_passes_the_batch_on(tmp_path: Path) -> None:
    registry = Registry()
    sink = run([[{"n": 1}]], [ExplodingFilter("loose", registry)], registry, tmp_path)
    assert sink.events == [{"n": 1}]
    assert not (tmp_path / "filter-loose.ndjson").exists()
    assert not registry["loose"].dropped


def test_without_a_dead_letter_directory_the_batch_is_still_kept_from_the_sinks() -> None:
    registry = Registry()
    sink = run([[{"n": 1, "boom": 1}]], [RaisesOnBoom("strict", registry)], registry, None)
    assert sink.events == []
    assert registry["strict"].dropped["filter_error"] == 1


def test_the_built_pipeline_dead_letters_under_the_state_dir(tmp_path: Path) -> None:
    config = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "sinks": [{"type": "stdout"}],
            "state_dir": str(tmp_path),
        }
    )
    pipeline = build_pipeline(config)
    assert pipeline.dead_letters is not None
    assert (
        pipeline.dead_letters.path("redact") == tmp_path / "dead-letters" / "filter-redact.ndjson"
    )


# --------------------------------------------------------------------------- when


def run_config(filters: list[dict[str, Any]], batches: list[Batch], tmp_path: Path) -> list[Any]:
    """Build a pipeline from a config with a file sink, fed from a list."""
    out = tmp_path / "out.ndjson"
    config = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": filters,
            "sinks": [{"type": "file", "path": str(out), "batch_max_delay_secs": 0.01}],
            "state_dir": str(tmp_path / "state"),
            "pipeline": {"filter_batch_max_events": 7},
        }
    )
    pipeline = build_pipeline(config)
    source = ListInput("list", pipeline.registry, batches)
    pipeline.inputs = [source]

    async def scenario() -> None:
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)

    asyncio.run(scenario())
    return read_ndjson(out)


def test_a_filter_with_when_touches_only_matching_events_and_keeps_the_order(
    tmp_path: Path,
) -> None:
    kinds = ["app", "app", "syslog", "app", "syslog", "syslog", "app"]
    batches: list[Batch] = [
        [{"n": n, "type": kinds[n % len(kinds)]} for n in range(start, start + 10)]
        for start in range(0, 50, 10)
    ]
    events = run_config(
        [
            {"type": "mutate", "add_tags": ["app"], "when": 'type == "app"'},
            # A filter that removes events: app events past 40 go, syslog ones stay.
            {"type": "drop", "if": "n > 40", "when": 'type == "app"'},
        ],
        batches,
        tmp_path,
    )
    expected = [n for n in range(50) if not (kinds[n % len(kinds)] == "app" and n > 40)]
    assert [e["n"] for e in events] == expected  # stream order kept across runs
    for event in events:
        assert ("tags" in event) == (event["type"] == "app")


def test_when_counts_passed_over_events_as_unselected(tmp_path: Path) -> None:
    config = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "mutate", "id": "m", "add_tags": ["x"], "when": "n >= 3"}],
            "sinks": [{"type": "stdout"}],
            "state_dir": str(tmp_path),
        }
    )
    pipeline = build_pipeline(config)
    (unit,) = pipeline.filters
    assert unit.when is not None
    out = pipeline._apply_filters([{"n": n} for n in range(5)], 0)
    assert [e.get("tags") for e in out] == [None, None, None, ["x"], ["x"]]
    assert unit.metrics.events_in == 2 and unit.metrics.events_unselected == 3


def test_a_bad_when_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"filters\[0\] \(mutate\)\.when"):
        parse_config(
            {
                "inputs": [{"type": "tcp"}],
                "filters": [{"type": "mutate", "add_tags": ["x"], "when": "level >= )"}],
                "sinks": [{"type": "stdout"}],
            }
        )
