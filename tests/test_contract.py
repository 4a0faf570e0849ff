"""One contract suite for every sink and filter.

A new sink is tested by adding a harness to ``SINKS`` (how to configure it
against a real destination, and how to read back what arrived); a new filter
by adding example configs to ``FILTERS``. The suite then checks what every
unit of its kind promises: order, flush on close, and that every event is
either delivered or counted as dropped with a reason.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from logstream.config import AnyFilter, AnySink, build_pipeline, parse_config
from logstream.event import Batch
from logstream.metrics import Registry
from logstream.payload import is_accounting
from logstream.pipeline import SinkRunner, SinkSettings
from logstream.units import BuildContext, Sink
from tests.support.units import ListInput

# --------------------------------------------------------------------------- sinks

Reader = Callable[[], list[dict[str, Any]]]


@dataclass
class Harness:
    config: dict[str, Any]
    read: Reader
    sink: Sink | None = None  # set when the harness must build the sink itself


def file_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    path = tmp_path / "out.ndjson"
    return Harness(
        {"type": "file", "path": str(path)},
        lambda: [orjson.loads(line) for line in path.read_bytes().splitlines()],
    )


def stdout_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    from logstream.sinks.stdout import StdoutSink, StdoutSinkConfig

    out = io.BytesIO()
    config = {"type": "stdout"}
    sink = StdoutSink(StdoutSinkConfig.model_validate(config), "contract", BuildContext(), out)
    return Harness(
        config, lambda: [orjson.loads(line) for line in out.getvalue().splitlines()], sink
    )


def elasticsearch_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    from tests.support.elasticsearch import es_docs

    url = request.getfixturevalue("elasticsearch_url")
    prefix = request.getfixturevalue("es_index_prefix")

    def read() -> list[dict[str, Any]]:
        return sorted(es_docs(url, f"{prefix}*", size=5000), key=lambda doc: doc["seq"])

    return Harness({"type": "elasticsearch", "hosts": [url], "index": f"{prefix}-contract"}, read)


def mqtt_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    from tests.support.mqtt import contract_destination

    return Harness(*contract_destination(request))


def mqtt_lz4_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    """The mqtt sink batching lz4 payloads under a (generous) rate limit: its timer
    task, sampler stage and token buckets run, and nothing may be lost."""
    from logstream.payload import decode

    broker = request.getfixturevalue("mosquitto")
    root = request.getfixturevalue("mqtt_topic_root")
    subscriber = request.getfixturevalue("mqtt_subscriber")(broker.url, f"{root}/#")
    config = {
        "type": "mqtt",
        "url": broker.url,
        "topic": f"{root}/{{host}}/{{level}}",
        "qos": 1,
        "encoding": "lz4",
        "rate_limit": {"total_bytes_per_sec": 100_000_000},
    }
    return Harness(
        config, lambda: [e for m in subscriber.wait_quiet() for e in decode(m.payload).events]
    )


def nats_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    """The nats sink into a JetStream stream, read back message by message in stream order."""
    import nats

    from logstream.payload import decode

    server = request.getfixturevalue("nats_server")

    def read() -> list[dict[str, Any]]:
        async def fetch_all() -> list[dict[str, Any]]:
            client = await nats.connect(server.url)
            try:
                js = client.jetstream()
                last = (await js.stream_info("CONTRACT")).state.last_seq
                messages = [await js.get_msg("CONTRACT", seq) for seq in range(1, last + 1)]
            finally:
                await client.close()
            return [event for m in messages for event in decode(m.data or b"").events]

        return asyncio.run(fetch_all())

    config = {"type": "nats", "servers": [server.url], "stream": "CONTRACT", "subject": "c.x"}
    return Harness(config, read)


SINKS: dict[str, Callable[[pytest.FixtureRequest, Path], Harness]] = {
    "nats": nats_harness,
    "mqtt": mqtt_harness,
    "mqtt-lz4": mqtt_lz4_harness,
    "elasticsearch": elasticsearch_harness,
    "file": file_harness,
    "stdout": stdout_harness,
}


def test_every_sink_type_has_a_contract_harness() -> None:
    sink_types = {
        member.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
        for member in AnySink.__origin__.__args__  # type: ignore[attr-defined]
    }
    assert sink_types <= set(SINKS), f"no harness for {sink_types - set(SINKS)}"


def numbered(count: int, start: int = 0) -> Batch:
    return [
        {
            "@timestamp": "2026-11-24T10:00:00.000Z",
            "seq": n,
            "message": f"event {n}",
            "host": "web-1",
            "level": "INFO",
        }
        for n in range(start, start + count)
    ]


def build_sink(harness: Harness, registry: Registry) -> Sink:
    if harness.sink is not None:
        harness.sink.metrics = registry.unit("contract", "sink")
        return harness.sink
    config = parse_config(
        {"inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}], "sinks": [harness.config]}
    ).sinks[0]
    return config.build("contract", BuildContext(registry=registry))


@pytest.fixture(params=sorted(SINKS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return SINKS[request.param](request, tmp_path)


def test_sink_delivers_batches_in_order_and_counts_them(harness: Harness) -> None:
    registry = Registry()
    sink = build_sink(harness, registry)

    async def scenario() -> None:
        await sink.start()
        for start in range(0, 300, 100):
            await sink.write(numbered(100, start))
        await sink.close()

    asyncio.run(scenario())
    got = [event["seq"] for event in harness.read()]
    assert got == list(range(300))
    assert registry["contract"].events_out == 300
    assert registry["contract"].bytes_out > 0


def test_sink_under_the_runtime_flushes_everything_on_shutdown(harness: Harness) -> None:
    registry = Registry()
    sink = build_sink(harness, registry)

    async def scenario() -> None:
        from logstream.pipeline import Pipeline

        source = ListInput("list", registry, [numbered(7, n * 7) for n in range(30)])
        runner = SinkRunner(sink, SinkSettings(batch_max_events=50, batch_max_delay_secs=5))
        pipeline = Pipeline([source], [], [runner], registry=registry)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 10)
        report = await pipeline.stop(timeout_secs=20)
        assert report.clean

    asyncio.run(scenario())
    assert [event["seq"] for event in harness.read()] == list(range(210))
    metrics = registry["contract"]
    assert metrics.events_out + metrics.dropped_total == metrics.events_in == 210


def test_sink_counts_events_it_cannot_encode_instead_of_failing_the_batch(
    harness: Harness,
) -> None:
    registry = Registry()
    sink = build_sink(harness, registry)
    batch = numbered(3)
    batch[1]["bad"] = {1, 2}  # a set: not JSON

    async def scenario() -> None:
        await sink.start()
        await sink.write(batch)
        await sink.close()

    asyncio.run(scenario())
    assert [event["seq"] for event in harness.read()] == [0, 2]
    metrics = registry["contract"]
    assert metrics.events_out == 2
    assert metrics.dropped["encode_error"] == 1


# --------------------------------------------------------------------------- filters

FILTERS: list[dict[str, Any]] = [
    {
        "type": "mutate",
        "rename": {"host": "hostname"},
        "remove": ["level"],
        "add": {"env": "ci"},
        "truncate": {"message": 5},
        "add_tags": ["seen"],
    },
    {"type": "mutate"},
    {
        "type": "mutate",
        "rename": {"[a][b]": "[c][d]"},
        "remove": ["[x][y]"],
        "add": {"[meta][origin]": "%{host}"},
        "replace": {"label": "%{host}-%{level}"},
        "truncate": {"[c][d]": 3},
    },
    {"type": "regex", "patterns": [r"^(?P<word>\w+) (?P<n>\d+)$", r"(?P<first>\S+)"]},
    {
        "type": "regex",
        "source": "[a][b]",
        "patterns": [r"(?P<x>.)"],
        "on_failure": None,
        "overwrite": True,
    },
    {"type": "drop", "if": "seq >= 10 and seq < 20 or message =~ /7$/"},
    {"type": "drop", "if": "level >= WARNING"},
    {
        "type": "route",
        "rules": [
            {"name": "even", "if": "seq in [0, 2, 4]"},
            {"name": "web", "if": 'host == "web-1"'},
        ],
        "default": "rest",
    },
    {
        "type": "route",
        "mode": "all",
        "field": "[@metadata][route]",
        "rules": [{"name": "info", "if": "level == INFO"}, {"name": "any", "if": "exists seq"}],
    },
    {"type": "redact"},
    {
        "type": "redact",
        "fields": ["message", "[a][b]"],
        "rules": ["passwords"],
        "patterns": [r"event (?P<secret>\d)"],
        "replacement": "[hidden]",
        "by_field_name": False,
    },
    {
        "type": "sample",
        "levels": {"WARNING": 1, "INFO": 1, "DEBUG": 100},
        "key_fields": ["host", "seq"],
        "accounting_fields": ["host"],
    },
    {"type": "parse", "on_failure": None},
    {
        "type": "parse",
        "format": "oslo",
        "fields": "ecs",
        "on_failure": None,
        "multiline_max_lines": 2,
        "keep_original": True,
        "stream_key": ["host", "[a][b]"],
    },
    {"type": "multiline", "pattern": r"^\s", "max_lines": 3},
]

# Filters that drop part of numbered(): tested one by one, not in the chain below.
UNIT_FILTERS: list[dict[str, Any]] = [
    {"type": "sample", "rate": 10},
    {"type": "sample", "ratio": 0.3, "key_fields": ["seq"], "accounting_fields": ["host"]},
    {"type": "sample", "budget_bytes_per_sec": 100, "window_secs": 0.001},
    {"type": "parse"},
    {"type": "multiline", "pattern": "^event [0-9]*[27]$", "what": "next", "max_lines": 3},
    {"type": "multiline", "pattern": "^event [0-9]*[05]$", "negate": True, "max_bytes": 20},
]

ODD_EVENTS: Batch = [
    {},
    {"message": None, "tags": "not-a-list"},
    {"message": 12, "host": ["a", "b"], "level": {"nested": True}},
    {"message": "x" * 10_000, "tags": [], "@timestamp": "garbage"},
    {"message": "ünïcödé \u0000 \ud7ff", "host": ""},
]


def test_every_filter_type_has_contract_configs() -> None:
    filter_types = {FILTER["type"] for FILTER in FILTERS}
    known = AnyFilter.__origin__  # type: ignore[attr-defined]
    members = getattr(known, "__args__", (known,))
    assert {m.model_fields["type"].annotation.__args__[0] for m in members} <= filter_types


def build_filter(config: dict[str, Any], registry: Registry) -> Any:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [config],
            "sinks": [{"type": "stdout"}],
        }
    )
    return parsed.filters[0].build("contract", BuildContext(registry=registry))


def input_events(out: Batch) -> Batch:
    """``out`` without the accounting records a filter made (they are not input events)."""
    return [event for event in out if not is_accounting(event)]


@pytest.mark.parametrize(
    "config", FILTERS + UNIT_FILTERS, ids=lambda c: orjson.dumps(c).decode()[:60]
)
def test_filter_keeps_order_and_accounts_for_every_event(config: dict[str, Any]) -> None:
    registry = Registry()
    unit = build_filter(config, registry)
    out = input_events(unit.process(numbered(50)) + unit.flush())
    seqs = [event["seq"] for event in out]
    assert seqs == sorted(seqs)
    assert len(out) + registry["contract"].dropped_total == 50


@pytest.mark.parametrize(
    "config", FILTERS + UNIT_FILTERS, ids=lambda c: orjson.dumps(c).decode()[:60]
)
def test_filter_never_raises_on_odd_events(config: dict[str, Any]) -> None:
    registry = Registry()
    unit = build_filter(config, registry)
    out = unit.process([dict(event) for event in ODD_EVENTS]) + unit.tick(0.0) + unit.flush()
    out = input_events(out)
    assert len(out) + registry["contract"].dropped_total == len(ODD_EVENTS)


def test_filters_run_inside_a_pipeline_built_from_config(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    config = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": FILTERS,
            "sinks": [{"type": "file", "path": str(path)}],
        }
    )
    pipeline = build_pipeline(config)

    async def scenario() -> None:
        await pipeline.start()
        pipeline.ingest.push(numbered(3))
        await pipeline.stop()

    asyncio.run(scenario())
    out = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [event["message"] for event in out] == ["event", "event", "event"]
    assert all(event["hostname"] == "web-1" and "level" not in event for event in out)
    assert all(event["tags"] == ["seen"] and event["env"] == "ci" for event in out)
