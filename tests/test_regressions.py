"""Promised behaviour that outside mutation showed no test guarded (issue 13): each of
these fails when the behaviour is switched off.

- the file sink rotates at ``rotate_max_bytes`` and keeps ``rotate_keep`` old files;
- ``/health`` answers 503 while the pipeline stops;
- a TLS listener with ``min_version: "1.3"`` refuses a TLS 1.2-only client.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession

from logstream.config import parse_config
from logstream.metrics import Registry
from logstream.monitor import Monitor, MonitorSettings, PipelineSource
from logstream.pipeline import Pipeline, SinkRunner, SinkSettings
from logstream.sinks.file import FileSinkConfig
from logstream.units import BuildContext
from tests.support.inputs import LOOPS, Runner, running, take
from tests.support.tls import Certificates, make_certificates
from tests.support.units import CollectingSink, ListInput


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


# --------------------------------------------------------------------------- file rotation


def test_the_file_sink_rotates_at_rotate_max_bytes_and_keeps_rotate_keep_files(
    run: Runner, tmp_path: Path
) -> None:
    path = tmp_path / "out.ndjson"
    config = FileSinkConfig(type="file", path=path, rotate_max_bytes=1000, rotate_keep=2)
    events = [{"seq": n, "message": "x" * 80} for n in range(40)]

    async def scenario() -> None:
        sink = config.build("file", BuildContext())
        await sink.start()
        for event in events:
            await sink.write([event])
        await sink.close()
        assert sink.metrics.events_out == 40

    run(scenario())
    files = [path, path.with_name("out.ndjson.1"), path.with_name("out.ndjson.2")]
    assert all(f.exists() for f in files)
    assert not path.with_name("out.ndjson.3").exists()  # rotate_keep: 2 old files at most
    sizes = [f.stat().st_size for f in files]
    assert all(0 < size <= 1000 for size in sizes), sizes
    # Oldest first: .2, .1, then the live file; contiguous, ending with the last event.
    seqs = [
        orjson.loads(line)["seq"] for f in reversed(files) for line in f.read_bytes().splitlines()
    ]
    assert seqs == list(range(seqs[0], 40))
    assert seqs[0] > 0  # older files beyond rotate_keep were removed


# --------------------------------------------------------------------------- /health


def test_health_answers_503_while_the_pipeline_stops(run: Runner) -> None:
    async def scenario() -> tuple[int, dict[str, Any], int, dict[str, Any]]:
        registry = Registry()
        gate = asyncio.Event()  # the sink cannot finish writing until it is set
        sink = CollectingSink("slow", registry, gate=gate)
        pipeline = Pipeline(
            [ListInput("in", registry, [[{"message": "one"}]])],
            [],
            [SinkRunner(sink, SinkSettings(batch_max_delay_secs=0.0))],
            registry=registry,
        )
        monitor = Monitor(PipelineSource(pipeline), MonitorSettings(listen="127.0.0.1:0"))
        await pipeline.start()
        await monitor.start()
        try:
            async with ClientSession() as http:
                async with http.get(f"{monitor.url}/health") as answer:
                    up = answer.status, await answer.json()
                stopping = asyncio.create_task(pipeline.stop(timeout_secs=10.0))
                await asyncio.sleep(0.1)  # stop() waits on the gated sink
                assert not stopping.done()
                async with http.get(f"{monitor.url}/health") as answer:
                    down = answer.status, await answer.json()
                gate.set()
                await stopping
        finally:
            await monitor.stop()
        return up[0], up[1], down[0], down[1]

    up_status, up_body, down_status, down_body = run(scenario())
    assert (up_status, up_body["status"]) == (200, "ok")
    assert (down_status, down_body["status"]) == (503, "stopping")


# --------------------------------------------------------------------------- TLS min_version


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def tls_tcp_input(certs: Certificates, min_version: str) -> Any:
    settings = {
        "type": "tcp",
        "listen": "127.0.0.1:0",
        "tls": {"cert_file": str(certs.cert), "key_file": str(certs.key),
                "min_version": min_version},
    }  # fmt: skip
    config = parse_config({"inputs": [settings], "sinks": [{"type": "stdout"}]})
    return config.inputs[0].build("tcp", BuildContext())


def tls12_only_client(certs: Certificates) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.mark.integration
@pytest.mark.parametrize("min_version", ["1.2", "1.3"])
def test_min_version_refuses_older_clients(
    run: Runner, certs: Certificates, min_version: str
) -> None:
    from logstream.buffer import BatchBuffer

    async def scenario() -> str:
        unit = tls_tcp_input(certs, min_version)
        async with running(unit, BatchBuffer(100)) as ingest:
            host, port = unit.address
            try:
                _reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls12_only_client(certs)
                )
            except (ssl.SSLError, ConnectionError) as error:
                return f"refused: {error}"
            version = writer.get_extra_info("ssl_object").version()
            writer.write(b'{"message": "over tls 1.2"}\n')
            await writer.drain()
            event = (await take(ingest, 1))[0]
            writer.close()
            return f"{version}: {event['message']}"

    outcome = run(scenario())
    if min_version == "1.2":
        assert outcome == "TLSv1.2: over tls 1.2"
    else:
        assert outcome.startswith("refused"), outcome
