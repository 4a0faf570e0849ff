"""The elasticsearch sink against a real Elasticsearch-API server (noida-db, or the
cluster named by LOGSTREAM_TEST_ES_URL), driven directly: start, write, close."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from logstream.event import Batch
from logstream.local.noida import Noida
from logstream.metrics import UnitMetrics
from logstream.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkConfig
from logstream.units import BuildContext
from tests.support.elasticsearch import es_count, es_docs, es_indices
from tests.support.inputs import eventually

integration = pytest.mark.integration


def sink_config(host: str, index: str, **settings: Any) -> ElasticsearchSinkConfig:
    return ElasticsearchSinkConfig.model_validate(
        {
            "type": "elasticsearch",
            "hosts": [host],
            "index": index,
            "retry_initial_secs": 0.05,
            "retry_max_secs": 0.2,
            **settings,
        }
    )


def build(config: ElasticsearchSinkConfig, state_dir: Path | None = None) -> ElasticsearchSink:
    """The sink, keeping its state (dead letters, spool) in ``state_dir`` (default: a
    new temporary directory)."""
    state = state_dir or Path(tempfile.mkdtemp(prefix="logstream-es-"))
    return config.build("es", BuildContext(state_dir=state))


def run(sink: ElasticsearchSink, *batches: Batch) -> UnitMetrics:
    """Start the sink, write the batches one after the other, close it."""

    async def scenario() -> None:
        await sink.start()
        try:
            for batch in batches:
                await sink.write(batch)
        finally:
            await sink.close()

    asyncio.run(scenario())
    metrics: UnitMetrics = sink.metrics
    return metrics


def events(count: int, start: int = 0, **fields: Any) -> Batch:
    return [
        {
            "@timestamp": "2026-11-24T10:00:00.000Z",
            "@version": "1",
            "seq": n,
            "message": f"event {n}",
            "host": "web-1",
            **fields,
        }
        for n in range(start, start + count)
    ]


# --------------------------------------------------------------------------- with a server


@integration
def test_documents_arrive_with_their_fields_and_timestamp(
    elasticsearch_url: str, es_index_prefix: str
) -> None:
    batch: Batch = [
        {
            "@timestamp": "2026-11-24T10:00:00.123Z",
            "@version": "1",
            "message": "disk almost full",
            "level": "WARNING",
            "host": "web-1",
            "tags": ["disk", "prod"],
            "mount": {"path": "/var", "free_bytes": 1024, "ratio": 0.01},
            "seq": 0,
        },
        {"@timestamp": "2026-11-24T10:00:01.000Z", "message": "é ✓ \u2028", "seq": 1},
    ]
    metrics = run(build(sink_config(elasticsearch_url, f"{es_index_prefix}logs")), batch)

    docs = sorted(es_docs(elasticsearch_url, f"{es_index_prefix}logs"), key=lambda d: d["seq"])
    assert docs == batch
    assert metrics.events_out == 2
    assert metrics.bytes_out > 0
    assert metrics.dropped_total == 0


@integration
def test_each_event_goes_to_the_index_of_its_own_utc_day(
    elasticsearch_url: str, es_index_prefix: str
) -> None:
    stamps = [
        "2026-11-23T23:59:59.999Z",
        "2026-11-24T00:00:00.000Z",
        "2026-11-24T12:00:00.000Z",
        "2026-11-25T01:00:00+02:00",  # 2026-11-24T23:00Z
        "2026-11-25T00:30:00.000Z",
    ]
    batch = [{"@timestamp": stamp, "seq": n} for n, stamp in enumerate(stamps)]
    run(build(sink_config(elasticsearch_url, f"{es_index_prefix}logstash-%{{+YYYY.MM.dd}}")), batch)

    assert es_indices(elasticsearch_url, f"{es_index_prefix}*") == {
        f"{es_index_prefix}logstash-2026.11.23": 1,
        f"{es_index_prefix}logstash-2026.11.24": 3,
        f"{es_index_prefix}logstash-2026.11.25": 1,
    }


@integration
def test_index_names_are_interpolated_from_event_fields(
    elasticsearch_url: str, es_index_prefix: str
) -> None:
    batch = [
        {"service": "API", "k8s": {"ns": "prod"}, "seq": 0},
        {"service": "web", "k8s": {"ns": "prod"}, "seq": 1},
        {"service": "web", "k8s": {"ns": "dev"}, "seq": 2},
        {"k8s": {"ns": "prod"}, "seq": 3},  # no service: the reference stays, as in Logstash
    ]
    index = f"{es_index_prefix}%{{service}}-%{{[k8s][ns]}}"
    run(build(sink_config(elasticsearch_url, index)), batch)

    assert es_indices(elasticsearch_url, f"{es_index_prefix}*") == {
        f"{es_index_prefix}api-prod": 1,
        f"{es_index_prefix}web-prod": 1,
        f"{es_index_prefix}web-dev": 1,
        f"{es_index_prefix}%{{service}}-prod": 1,
    }


@integration
def test_a_batch_larger_than_batch_max_bytes_is_sent_as_several_requests_and_all_indexed(
    elasticsearch_url: str, es_index_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    limit = 16 * 1024
    batch = events(1000)
    batch[500]["message"] = "x" * (3 * limit)  # larger than the limit alone: sent by itself
    sink = build(sink_config(elasticsearch_url, f"{es_index_prefix}big", batch_max_bytes=limit))

    with caplog.at_level(logging.INFO, logger="elastic_transport.transport"):
        metrics = run(sink, batch)

    requests = len([r for r in caplog.records if "/_bulk" in r.getMessage()])
    big_request = 3 * limit + 500  # the large event and its action line
    assert requests >= 10
    assert metrics.bytes_out - big_request <= (requests - 1) * limit  # the others fit the limit
    assert metrics.events_out == 1000
    assert es_count(elasticsearch_url, f"{es_index_prefix}big") == 1000


@integration
def test_writes_retry_while_the_server_is_down_and_every_event_arrives_once(
    restartable_elasticsearch: Noida,
) -> None:
    server = restartable_elasticsearch
    sink = build(sink_config(server.url, "restart"))
    down_for_retries = 3

    async def scenario() -> None:
        await sink.start()
        try:
            await sink.write(events(500, 0))
            await asyncio.to_thread(server.stop)
            second = asyncio.create_task(sink.write(events(500, 500)))
            await eventually(lambda: sink.metrics.retries >= down_for_retries, 10)
            assert not second.done()  # still retrying, nothing dropped
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(second, 10)
            await sink.write(events(500, 1000))
        finally:
            await sink.close()

    asyncio.run(scenario())
    assert es_count(server.url, "restart") == 1500
    seqs = sorted(doc["seq"] for doc in es_docs(server.url, "restart", size=2000))
    assert seqs == list(range(1500))
    assert sink.metrics.events_out == 1500
    assert sink.metrics.retries >= down_for_retries
    assert sink.metrics.dropped_total == 0


@integration
def test_a_mapping_conflict_dead_letters_only_the_conflicting_events_with_one_log_line(
    elasticsearch_url: str, es_index_prefix: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    index = f"{es_index_prefix}conflict"
    first = events(5, 0, size=1)  # "size" becomes a long
    second = events(6, 5, size=2)
    second[1]["size"] = {"bytes": 10}  # an object where a long is mapped
    second[4]["size"] = {"bytes": 20}

    with caplog.at_level(logging.ERROR, logger="logstream.sinks.elasticsearch"):
        metrics = run(build(sink_config(elasticsearch_url, index), tmp_path), first, second)

    seqs = sorted(doc["seq"] for doc in es_docs(elasticsearch_url, index))
    assert seqs == [0, 1, 2, 3, 4, 5, 7, 8, 10]
    assert metrics.events_out == 9
    assert dict(metrics.dropped) == {"dead_letter": 2}
    assert metrics.retries == 0
    first_refusal, summary = caplog.records
    assert index in first_refusal.getMessage()
    assert "refused 2 of 6 events" in summary.getMessage()
    letters = (tmp_path / "dead-letters" / "es.ndjson").read_text().splitlines()
    assert sorted(json.loads(line)["document"]["seq"] for line in letters) == [6, 9]


# --------------------------------------------------------------------------- without a server


def test_an_unreachable_server_is_retried_until_the_write_is_cancelled() -> None:
    sink = build(sink_config("http://127.0.0.1:9", "x", retry_max_secs=0.1))  # discard port

    async def scenario() -> None:
        await sink.start()
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sink.write(events(10)), 0.6)
        finally:
            await sink.close()

    asyncio.run(scenario())
    assert sink.metrics.retries >= 3
    assert sink.metrics.dropped_total == 0
    assert sink.metrics.events_out == 0


def test_with_max_retries_a_write_gives_up_and_counts_a_sink_error() -> None:
    sink = build(sink_config("http://127.0.0.1:9", "x", max_retries=2))
    metrics = run(sink, events(10))
    assert metrics.retries == 2
    assert dict(metrics.dropped) == {"sink_error": 10}


def test_backoff_doubles_from_the_initial_delay_up_to_the_maximum_with_jitter() -> None:
    sink = build(sink_config("http://127.0.0.1:9", "x", retry_initial_secs=1, retry_max_secs=64))
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (7, 64), (8, 64), (5000, 64)]:
        delays = [sink._backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hosts": ["127.0.0.1:9200"]}, "scheme, host and port"),
        ({"hosts": ["http://es.example"]}, "scheme, host and port"),
        ({"hosts": []}, "at least 1"),
        ({"index": "logs-%{+YYYY.MM.dd.SSS}"}, "unsupported token 'SSS'"),
        ({"index": "My Logs"}, "did you mean 'my_logs'"),
        ({"username": "elastic"}, "username and password go together"),
        ({"username": "u", "password": "p", "api_key": "k"}, "not both"),
        ({"retry_initial_secs": 10, "retry_max_secs": 1}, "retry_max_secs"),
        ({"batch_max_bytes": 10}, "greater than or equal to 1024"),
        ({"flavour": "opensearch"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ElasticsearchSinkConfig.model_validate({"type": "elasticsearch", **settings})


def test_empty_credentials_from_unset_environment_variables_mean_none() -> None:
    config = ElasticsearchSinkConfig.model_validate(
        {"type": "elasticsearch", "api_key": "", "username": "", "password": ""}
    )
    assert (config.username, config.password, config.api_key) == (None, None, None)
    assert config.hosts == ["http://127.0.0.1:9200"]
    assert ElasticsearchSinkConfig.model_validate(
        {"type": "elasticsearch", "hosts": "https://es.example:443"}
    ).hosts == ["https://es.example:443"]


def test_an_unreadable_ca_file_fails_the_build_naming_the_file(tmp_path: Path) -> None:
    config = ElasticsearchSinkConfig.model_validate(
        {"type": "elasticsearch", "ca_file": str(tmp_path / "missing.pem")}
    )
    with pytest.raises(ValueError, match=r"missing\.pem"):
        build(config)
