"""The persisted ingest queue (pipeline.queue.type: disk): events are on disk before
they count as accepted, the queue is acknowledged only once every sink has written
them, and a restart (also after kill -9) replays what was not acknowledged."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from logstream.buffer import BatchBuffer
from logstream.config import ConfigError, build_pipeline, parse_config
from logstream.event import Batch
from logstream.local.mosquitto import free_port
from logstream.metrics import Registry
from logstream.pipeline import Pipeline, SinkRunner, SinkSettings
from logstream.queue import DiskQueue, QueueConfig
from logstream.shutdown import ShutdownReport
from logstream.spool import Spool, SpoolSettings
from logstream.units import Input
from tests.support.units import CollectingSink, ListInput


def events(start: int, count: int) -> list[dict[str, Any]]:
    return [{"n": n, "message": f"event {n}"} for n in range(start, start + count)]


def disk_queue(directory: Path, registry: Registry) -> DiskQueue:
    settings = QueueConfig(type="disk", max_bytes=1 << 22, segment_bytes=1 << 16)
    return DiskQueue(directory, settings.spool_settings(), registry.unit("queue", "pipeline"), 100)


def pipeline_with(
    source: Input, sink: CollectingSink, registry: Registry, directory: Path
) -> Pipeline:
    return Pipeline(
        [source],
        [],
        [SinkRunner(sink, SinkSettings(buffer_max_events=50, batch_max_events=50))],
        registry=registry,
        ingest_max_events=100,
        filter_batch_max_events=100,
        tick_secs=0.02,
        queue=disk_queue(directory, registry),
    )


def test_every_event_passes_through_the_disk_queue_in_order(tmp_path: Path) -> None:
    async def scenario() -> tuple[CollectingSink, ShutdownReport]:
        registry = Registry()
        sink = CollectingSink("out", registry)
        source = ListInput("list", registry, [events(i * 37, 37) for i in range(30)])
        pipeline = pipeline_with(source, sink, registry, tmp_path / "queue")
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        report = await pipeline.stop(timeout_secs=5)
        return sink, report

    sink, report = asyncio.run(scenario())
    assert sink.events == events(0, 30 * 37)
    assert report.clean and report.on_disk == {}
    # Everything was acknowledged: nothing is read again.
    assert Spool.open(tmp_path / "queue", SpoolSettings()).recovery.entries == 0


def test_events_are_safe_once_on_disk_and_acked_only_once_the_sink_wrote_them(
    tmp_path: Path,
) -> None:
    """A sink that never writes: the inputs' events still become safe (they are on
    disk), the queue keeps every one of them unacknowledged, and the next start
    delivers them all."""

    async def first_run() -> ShutdownReport:
        registry = Registry()
        stuck = CollectingSink("out", registry, gate=asyncio.Event())  # never opens
        source = ListInput("list", registry, [events(i * 100, 100) for i in range(10)])
        pipeline = pipeline_with(source, stuck, registry, tmp_path / "queue")
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        ingest = pipeline.ingest
        await asyncio.wait_for(ingest.wait_safe(1000), 5)  # on disk, though never written
        assert pipeline.queue is not None and pipeline.queue.spool is not None
        assert pipeline.queue.spool.pending_entries == 1000  # nothing acknowledged
        return await pipeline.stop(timeout_secs=0.5)

    report = asyncio.run(first_run())
    assert report.on_disk == {"queue": 1000}
    assert "every event flushed" not in report.summary()

    async def second_run() -> CollectingSink:
        registry = Registry()
        sink = CollectingSink("out", registry)
        source = ListInput("list", registry, [events(1000, 10)])
        pipeline = pipeline_with(source, sink, registry, tmp_path / "queue")
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop(timeout_secs=5)
        return sink

    sink = asyncio.run(second_run())
    assert sink.events == events(0, 1010)  # the replay first, then the new events


class PushInput(Input):
    """Pushes its batches without waiting, and records when each became safe."""

    def __init__(self, registry: Registry, batches: list[Batch]) -> None:
        super().__init__("push", registry.unit("push", "input"))
        self.batches = batches
        self.safe_at: list[int] = []

    async def start(self, ingest: BatchBuffer) -> None:
        for batch in self.batches:
            ingest.push(batch)
            ingest.call_when_safe(ingest.accepted, lambda a=ingest.accepted: self.safe_at.append(a))

    async def stop(self) -> None:
        pass


def test_safe_means_on_disk_with_a_disk_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        registry = Registry()
        sink = CollectingSink("out", registry, gate=asyncio.Event())
        source = PushInput(registry, [events(0, 10), events(10, 10)])
        pipeline = pipeline_with(source, sink, registry, tmp_path / "queue")
        await pipeline.start()
        for _ in range(100):  # the writer's word comes within a few ms
            if len(source.safe_at) == 2:
                break
            await asyncio.sleep(0.05)
        assert source.safe_at == [10, 20]  # safe though the sink never wrote a thing
        assert pipeline.ingest.durable
        spool = Spool.open(tmp_path / "queue", SpoolSettings())  # a second reader of the files
        assert spool.recovery.entries == 20
        await spool.close()
        await pipeline.stop(timeout_secs=0.2)

    asyncio.run(scenario())


def test_queue_settings_are_validated_and_built(tmp_path: Path) -> None:
    base = {
        "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
        "sinks": [{"type": "stdout"}],
        "state_dir": str(tmp_path),
    }
    pipeline = build_pipeline(parse_config({**base, "pipeline": {"queue": {"type": "disk"}}}))
    assert pipeline.queue is not None and pipeline.queue.directory == tmp_path / "queue"
    assert not (tmp_path / "queue").exists()  # opened by start, not by check
    assert build_pipeline(parse_config(base)).queue is None
    with pytest.raises(ConfigError, match=r"pipeline\.queue\.type"):
        parse_config({**base, "pipeline": {"queue": {"type": "kafka"}}})
    with pytest.raises(ConfigError, match="two segments"):
        parse_config({**base, "pipeline": {"queue": {"type": "disk", "max_bytes": 1 << 20}}})


# --------------------------------------------------------------------------- kill -9


def metric(monitor: str, name: str, unit: str) -> float:
    text = urllib.request.urlopen(f"{monitor}/metrics", timeout=5).read().decode()  # noqa: S310
    total = 0.0
    for match in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        if f'unit="{unit}"' in match.group(1):
            total += float(match.group(2))
    return total


def start_logstream(tmp_path: Path, sinks: list[dict[str, Any]], tcp: int) -> tuple[Any, str]:
    monitor = free_port()
    config = {
        "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{tcp}"}],
        "sinks": sinks,
        "pipeline": {"queue": {"type": "disk", "fsync": "never"}},
        "monitor": {"listen": f"127.0.0.1:{monitor}"},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "logstream.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{monitor}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"logstream exited: {proc.communicate()[1]}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)  # noqa: S310
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("logstream did not come up")


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
def test_kill_9_loses_no_accepted_event(tmp_path: Path) -> None:
    """50k events over TCP into a `logstream run` whose only sink is stuck (an
    Elasticsearch nobody answers: it retries for ever, its buffer full); SIGKILL once
    the tcp input has read them all; restart with a file sink: every event arrives."""
    total = 50_000
    tcp = free_port()
    stuck = [
        {
            "type": "elasticsearch",
            "hosts": [f"http://127.0.0.1:{free_port()}"],  # nothing listens
            "index": "lost",
            "buffer_max_events": 1000,
            "retry_initial_secs": 5,
        }
    ]
    proc, monitor = start_logstream(tmp_path, stuck, tcp)
    try:
        lines = b"".join(
            orjson.dumps({"seq": n, "message": f"event {n}", "level": "INFO"}) + b"\n"
            for n in range(total)
        )
        with socket.create_connection(("127.0.0.1", tcp)) as conn:
            conn.sendall(lines)
        wait_until(lambda: metric(monitor, "logstream_events_in_total", "tcp") >= total, 60, "read")
        # Read from the socket is not yet accepted: accepted is on disk in the queue.
        wait_until(
            lambda: metric(monitor, "logstream_spool_events", "queue") >= total, 60, "on disk"
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    out = tmp_path / "out.ndjson"
    proc, monitor = start_logstream(tmp_path, [{"type": "file", "path": str(out)}], tcp)
    try:
        wait_until(
            lambda: metric(monitor, "logstream_events_out_total", "file") >= total, 60, "replay"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    seqs = sorted(orjson.loads(line)["seq"] for line in out.read_bytes().splitlines())
    assert seqs == list(range(total))  # every one, none twice (none had reached a sink)
    assert "every event flushed" in err


def test_the_http_input_answers_200_only_once_its_events_are_on_disk(tmp_path: Path) -> None:
    """With a disk queue the http input waits for the queue's word (ingest safe)."""
    from aiohttp import ClientSession

    from logstream.inputs.http import HttpInputConfig
    from logstream.units import BuildContext

    unit = HttpInputConfig(type="http", listen="127.0.0.1:0").build("http", BuildContext())

    async def scenario() -> None:
        ingest = BatchBuffer(100, safe_when_taken=False)
        ingest.durable = True
        await unit.start(ingest)
        host, port = unit.address
        try:
            async with ClientSession() as session:
                request = asyncio.ensure_future(
                    session.post(f"http://{host}:{port}/", data=orjson.dumps(events(0, 3)))
                )
                await asyncio.sleep(0.3)
                assert len(ingest) == 3 and not request.done()  # taken, not yet answered
                ingest.mark_safe(3)  # the queue writer's word: on disk
                response = await asyncio.wait_for(request, 5)
                assert response.status == 200
                response.release()
        finally:
            await unit.stop()

    asyncio.run(scenario())
