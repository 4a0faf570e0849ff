"""Elasticsearch delivery that loses nothing: ids, dead letters and replay, the disk
spool across outages, restarts and kill -9, data streams, templates, gzip,
OpenSearch, and ``check --connect``. Against real servers (noida-db, osmem-server,
mosquitto)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from logstream.bulk import BulkEncoder, DataStreamSettings
from logstream.cli import main
from logstream.event import Batch
from logstream.local.noida import Noida
from logstream.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkConfig
from logstream.spool import Spool, SpoolSettings
from logstream.units import BuildContext
from tests.support.elasticsearch import es_count, es_docs, es_request
from tests.support.inputs import eventually

integration = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def sink(state_dir: Path, host: str, **settings: Any) -> ElasticsearchSink:
    config = ElasticsearchSinkConfig.model_validate(
        {
            "type": "elasticsearch",
            "hosts": [host],
            "retry_initial_secs": 0.05,
            "retry_max_secs": 0.2,
            **settings,
        }
    )
    return config.build("es", BuildContext(state_dir=state_dir))


def events(count: int, start: int = 0, **fields: Any) -> Batch:
    return [
        {"@timestamp": "2026-11-24T10:00:00.000Z", "seq": n, "message": f"event {n}", **fields}
        for n in range(start, start + count)
    ]


def run(unit: ElasticsearchSink, *batches: Batch) -> None:
    async def scenario() -> None:
        await unit.start()
        try:
            for batch in batches:
                await unit.write(batch)
        finally:
            await unit.close()

    asyncio.run(scenario())


def wait_until(condition: Callable[[], bool], timeout_secs: float, what: str) -> None:
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def seqs(url: str, index: str, size: int = 10_000) -> list[int]:
    return sorted(doc["seq"] for doc in es_docs(url, index, size=size))


# --------------------------------------------------------------------------- ids (no server)


def test_document_ids_are_stable_and_come_from_the_source_position_when_there_is_one() -> None:
    encoder = BulkEncoder("logs")
    event = {"message": "x", "host": "h", "log": {"file": {"path": "/a"}, "offset": 10}}
    first, _ = encoder.encode(event)
    later, _ = encoder.encode({**event, "@timestamp": "read again later"})
    elsewhere, _ = encoder.encode({**event, "log": {"file": {"path": "/a"}, "offset": 11}})
    assert first == later  # same file position and line: same id, however it was re-read
    assert first != elsewhere
    plain_a, _ = encoder.encode({"message": "x", "@timestamp": "t1"})
    plain_b, _ = encoder.encode({"message": "x", "@timestamp": "t2"})
    assert plain_a != plain_b  # no position: the whole document decides
    assert orjson.loads(first)["create"]["_index"] == "logs"
    assert len(orjson.loads(first)["create"]["_id"]) == 20


def test_document_id_none_lets_the_server_pick_and_data_streams_always_create() -> None:
    action, _ = BulkEncoder("logs", "none").encode({"message": "x"})
    assert orjson.loads(action) == {"index": {"_index": "logs"}}
    stream = DataStreamSettings(dataset="%{format}", namespace="prod")
    action, document = BulkEncoder("x", "none", stream).encode({"format": "oslo-log"})
    assert orjson.loads(action) == {"create": {"_index": "logs-oslo_log-prod"}}
    assert orjson.loads(document)["data_stream"] == {
        "type": "logs",
        "dataset": "oslo_log",
        "namespace": "prod",
    }
    action, _ = BulkEncoder("x", "none", stream).encode({})
    assert orjson.loads(action)["create"]["_index"] == "logs-generic-prod"


# --------------------------------------------------------------------------- with a server


@integration
def test_sending_the_same_events_twice_creates_each_document_once(
    elasticsearch_url: str, es_index_prefix: str, tmp_path: Path
) -> None:
    index = f"{es_index_prefix}ids"
    unit = sink(tmp_path, elasticsearch_url, index=index)
    run(unit, events(300), events(300), events(50, 300))
    assert es_count(elasticsearch_url, index) == 350
    assert unit.metrics.events_out == 650
    assert unit.metrics.already_indexed == 300
    assert unit.metrics.dropped_total == 0


@integration
def test_refused_events_go_to_the_dead_letter_file_and_replay_after_the_mapping_is_fixed(
    elasticsearch_url: str, es_index_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = f"{es_index_prefix}strict"
    es_request(
        elasticsearch_url,
        "PUT",
        f"/{index}",
        {"mappings": {"dynamic": "strict", "properties": {"seq": {"type": "long"},
         "message": {"type": "text"}, "@timestamp": {"type": "date"}}}},
    )  # fmt: skip
    batch = events(10)
    for event in batch[3:6]:
        event["extra"] = "not in the mapping"
    unit = sink(tmp_path, elasticsearch_url, index=index)
    run(unit, batch)
    assert seqs(elasticsearch_url, index) == [0, 1, 2, 6, 7, 8, 9]
    assert dict(unit.metrics.dropped) == {"dead_letter": 3}
    dlq = tmp_path / "dead-letters" / "es.ndjson"
    records = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert [r["document"]["seq"] for r in records] == [3, 4, 5]
    assert {r["index"] for r in records} == {index}
    assert {r["error"]["type"] for r in records} == {"strict_dynamic_mapping_exception"}
    assert all(r["status"] == 400 and r["op_type"] == "create" and r["id"] for r in records)

    config = tmp_path / "replay.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
                "sinks": [{"type": "elasticsearch", "id": "es", "hosts": [elasticsearch_url],
                           "index": index, "retry_initial_secs": 0.05}],
                "state_dir": str(tmp_path),
            }
        )
    )  # fmt: skip
    # Before the fix: refused again and dead-lettered again (replaying early loses nothing).
    assert main(["replay", "--dlq", str(dlq), "-c", str(config)]) == 1
    assert "3 refused again" in capsys.readouterr().out
    assert len(dlq.read_text().splitlines()) == 3
    assert list(dlq.parent.iterdir()) == [dlq]
    es_request(elasticsearch_url, "PUT", f"/{index}/_mapping",
               {"properties": {"extra": {"type": "keyword"}}})  # fmt: skip
    assert main(["replay", "--dlq", str(dlq), "-c", str(config)]) == 0
    assert "3 indexed, 0 already there, 0 refused again" in capsys.readouterr().out
    assert seqs(elasticsearch_url, index) == list(range(10))
    assert not dlq.exists()


@integration
def test_spooled_sink_keeps_events_through_an_outage_and_delivers_each_once(
    restartable_elasticsearch: Noida, tmp_path: Path
) -> None:
    server = restartable_elasticsearch
    unit = sink(tmp_path, server.url, index="outage", spool={"enabled": True})

    async def scenario() -> None:
        await unit.start()
        try:
            await unit.write(events(1000))
            await eventually(lambda: unit.metrics.events_out == 1000, 15)
            await asyncio.to_thread(server.stop)
            for start in range(1000, 5000, 500):  # written to disk while the server is down
                await unit.write(events(500, start))
            await eventually(lambda: unit.metrics.retries >= 2, 15)
            assert unit.spool is not None and unit.spool.pending_entries >= 4000
            await asyncio.to_thread(server.start)
            await eventually(lambda: unit.metrics.events_out == 5000, 30)
        finally:
            await unit.close()

    asyncio.run(scenario())
    assert es_count(server.url, "outage") == 5000
    assert seqs(server.url, "outage") == list(range(5000))
    assert unit.metrics.dropped_total == 0


@integration
def test_a_damaged_last_spool_record_is_skipped_and_counted_and_the_rest_delivered(
    elasticsearch_url: str, es_index_prefix: str, tmp_path: Path
) -> None:
    index = f"{es_index_prefix}torn"
    unreachable = "http://127.0.0.1:9"  # nothing listens: everything stays in the spool
    first = sink(tmp_path, unreachable, index=index, spool={"enabled": True})

    async def fill() -> None:
        await first.start()
        for start in range(0, 300, 100):
            await first.write(events(100, start))
        await first.close()

    asyncio.run(fill())
    [segment] = sorted((tmp_path / "spool" / "es").glob("*.seg"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-50])  # the last record torn, as by a crash mid-write

    second = sink(tmp_path, elasticsearch_url, index=index, spool={"enabled": True})

    async def drain() -> None:
        await second.start()
        try:
            await eventually(lambda: second.metrics.events_out == 200, 15)
        finally:
            await second.close()

    asyncio.run(drain())
    assert seqs(elasticsearch_url, index) == list(range(200))
    assert second.metrics.spool_corrupt_records == 1  # the torn record, counted
    assert second.metrics.dropped_total == 0
    spool = Spool.open(tmp_path / "spool" / "es", SpoolSettings())
    assert spool.pending_entries == 0  # nothing left, and the damage is gone
    asyncio.run(spool.close())


@integration
def test_data_streams_template_install_and_gzip_bodies(
    elasticsearch_url: str, es_index_prefix: str, tmp_path: Path
) -> None:
    dataset = es_index_prefix.rstrip("-").replace("-", "_")
    unit = sink(
        tmp_path,
        elasticsearch_url,
        data_stream={"dataset": dataset, "namespace": "test"},
        template={"name": f"{dataset}-tpl"},
        compression="gzip",
    )
    run(unit, events(120, level="INFO"))
    index = f"logs-{dataset}-test"
    assert es_count(elasticsearch_url, index) == 120
    template = es_request(elasticsearch_url, "GET", f"/_index_template/{dataset}-tpl")
    body = template["index_templates"][0]["index_template"]
    assert body["index_patterns"] == [f"logs-{dataset}-*"]
    mapping = es_request(elasticsearch_url, "GET", f"/{index}/_mapping")
    properties = next(iter(mapping.values()))["mappings"]["properties"]
    assert properties["message"]["type"] == "text"
    assert properties["level"]["type"] == "keyword"
    assert es_docs(elasticsearch_url, index)[0]["data_stream"]["dataset"] == dataset
    assert unit.metrics.bytes_out > 0


@integration
def test_opensearch_takes_bulk_ids_and_dead_letters_and_is_recognised(tmp_path: Path) -> None:
    osmem = pytest.importorskip("osmem_server")
    with osmem.OsmemServer.start() as server:
        unit = sink(tmp_path, server.url, index="os-logs", flavor="opensearch")
        batch = events(50)
        run(unit, batch, batch)
        assert unit.info is not None and unit.info.flavor == "opensearch"
        assert es_count(server.url, "os-logs") == 50
        assert unit.metrics.already_indexed == 50
        # osmem has no data streams: once a data-stream template is installed it refuses
        # the items, and they are kept as dead letters, not lost.
        stream = sink(tmp_path, server.url, data_stream={"dataset": "app"}, template={})
        run(stream, events(5))
        assert dict(stream.metrics.dropped) == {"dead_letter": 5}


@integration
def test_check_connect_reports_each_destination(
    elasticsearch_url: str, local_mosquitto: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def check(es_url: str) -> int:
        config = tmp_path / "check.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
                    "sinks": [
                        {"type": "elasticsearch", "hosts": [es_url]},
                        {"type": "mqtt", "url": local_mosquitto.url, "topic": "t"},
                    ],
                    "state_dir": str(tmp_path),
                }
            )
        )
        return main(["check", "--connect", "-c", str(config)])

    assert check(elasticsearch_url) == 0
    out = capsys.readouterr().out
    assert "OK, Elasticsearch 8" in out
    assert "OK, connected" in out
    assert check("http://127.0.0.1:9") == 1
    assert "FAILED" in capsys.readouterr().out


# --------------------------------------------------------------------------- kill -9


@pytest.fixture
def logstream_process(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"logstream-{len(started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "logstream", "run", "-c", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def checkpoint_offset(state_dir: Path) -> int:
    try:
        data = json.loads((state_dir / "file" / "file.json").read_text())
    except (OSError, ValueError):
        return -1
    return max((entry["offset"] for entry in data["files"].values()), default=-1)


def append_lines(path: Path, start: int, count: int) -> None:
    with open(path, "a") as file:
        file.writelines(f"line {n} of the test\n" for n in range(start, start + count))


@integration
def test_kill_9_with_the_spool_on_loses_nothing_and_duplicates_nothing(
    restartable_elasticsearch: Noida,
    tmp_path: Path,
    logstream_process: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    """A file tailed into a spooled sink: kill -9 while Elasticsearch is down and the
    spool holds a backlog, write more, restart both: every line indexed once."""
    server = restartable_elasticsearch
    source = tmp_path / "app.log"
    source.write_text("")
    state = tmp_path / "state"
    config = tmp_path / "logstream.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": [{"type": "file", "paths": [str(source)],
                            "start_position": "beginning", "poll_interval_secs": 0.05,
                            "checkpoint_interval_secs": 0.1}],
                "sinks": [{"type": "elasticsearch", "hosts": [server.url], "index": "killed",
                           "retry_initial_secs": 0.1, "retry_max_secs": 0.5,
                           "spool": {"enabled": True, "fsync": "never"}}],
                "monitor": {"enabled": False},
                "state_dir": str(state),
            }
        )
    )  # fmt: skip
    append_lines(source, 0, 2000)
    first = logstream_process(config)
    wait_until(lambda: es_count(server.url, "killed*") == 2000, 30, "the first 2000 lines")
    server.stop()
    append_lines(source, 2000, 3000)
    size = source.stat().st_size
    # The checkpoint reaches the end only once the lines are in the spool (on disk).
    wait_until(lambda: checkpoint_offset(state) == size, 15, "the checkpoint to reach the end")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    append_lines(source, 5000, 1000)  # written while logstream is dead
    server.start()
    second = logstream_process(config)
    wait_until(lambda: es_count(server.url, "killed*") >= 6000, 60, "all 6000 lines")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    messages = [doc["message"] for doc in es_docs(server.url, "killed*", size=10_000)]
    assert len(messages) == 6000
    assert sorted(int(m.split()[1]) for m in messages) == list(range(6000))


# --------------------------------------------------------------------------- beats ACKs


@integration
def test_beats_windows_are_acked_once_on_disk_and_delivered_after_a_restart(
    elasticsearch_url: str, es_index_prefix: str, tmp_path: Path
) -> None:
    """Beats -> spooled sink whose server is unreachable: Filebeat's windows are ACKed
    (the events are in the spool on disk); the next run, with the server back,
    delivers them all. Re-sent windows would be folded by their ids."""
    from pylogbeat import PyLogBeatClient

    from logstream.config import build_pipeline, parse_config

    index = f"{es_index_prefix}beats"

    def pipeline(host: str) -> Any:
        config = parse_config(
            {
                "inputs": [{"type": "beats", "listen": "127.0.0.1:0"}],
                "sinks": [{"type": "elasticsearch", "hosts": [host], "index": index,
                           "retry_initial_secs": 0.05, "spool": {"enabled": True}}],
                "state_dir": str(tmp_path),
            }
        )  # fmt: skip
        return build_pipeline(config)

    def beat(n: int) -> dict[str, Any]:
        return {
            "@timestamp": "2026-11-24T10:00:00.000Z",
            "log": {"file": {"path": "/var/log/app.log"}, "offset": n * 20},
            "host": {"name": "web-1"},
            "message": f"line {n}",
            "seq": n,
        }

    def ship(address: tuple[str, int]) -> None:
        with PyLogBeatClient(*address, timeout=5) as client:
            client.send([beat(n) for n in range(100)])
            client.send([beat(n) for n in range(100, 250)])

    async def first_run() -> None:
        unit = pipeline("http://127.0.0.1:9")  # nothing listens there
        await unit.start()
        try:
            await asyncio.to_thread(ship, unit.inputs[0].address)  # returns once ACKed
        finally:
            await unit.stop(timeout_secs=2)
        assert unit.registry["elasticsearch"].events_out == 0

    async def second_run() -> None:
        unit = pipeline(elasticsearch_url)
        await unit.start()
        try:
            await eventually(lambda: unit.registry["elasticsearch"].events_out == 250, 15)
            await asyncio.to_thread(ship, unit.inputs[0].address)  # Filebeat re-sends
            await eventually(lambda: unit.registry["elasticsearch"].already_indexed == 250, 15)
        finally:
            await unit.stop(timeout_secs=5)

    asyncio.run(first_run())
    asyncio.run(second_run())
    assert seqs(elasticsearch_url, index) == list(range(250))


def test_a_full_spool_with_drop_oldest_counts_what_it_dropped(tmp_path: Path) -> None:
    """Server unreachable, spool capped: the oldest events go, counted as spool_full;
    what is kept plus what was dropped is what was written."""
    cap = 1024 * 1024
    unit = sink(
        tmp_path,
        "http://127.0.0.1:9",
        index="never",
        spool={"enabled": True, "max_bytes": cap, "segment_bytes": 65536,
               "when_full": "drop_oldest"},
    )  # fmt: skip
    big = "x" * 400

    async def scenario() -> int:
        await unit.start()
        try:
            for start in range(0, 6000, 200):
                await unit.write(events(200, start, padding=big))
            assert unit.spool is not None
            assert unit.spool.disk_bytes <= cap
            return unit.spool.pending_entries
        finally:
            await unit.close()

    kept = asyncio.run(scenario())
    dropped = unit.metrics.dropped["spool_full"]
    assert dropped > 0
    assert kept + dropped == 6000
