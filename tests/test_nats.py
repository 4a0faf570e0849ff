"""The nats sink and input against a real JetStream nats-server (single node).

Shipper and indexer pipelines run in-process here (the kill tests, with
`logstream run` processes and a 3-node cluster, are in test_nats_failover.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import lz4.frame
import nats
import orjson
import pytest
from nats.aio.msg import Msg

from logstream.config import ConfigError, build_pipeline, local_needs, parse_config
from logstream.inputs.nats import NatsInput, NatsInputConfig
from logstream.local.nats import LocalNats, NatsServer
from logstream.natsconn import mask_url
from logstream.pipeline import Pipeline
from logstream.sinks.nats import Message, NatsSink, compile_subject
from logstream.units import BuildContext
from tests.support.inputs import Runner, eventually, lines, numbered, send_tcp

run = Runner("uvloop")


def pipeline(tmp_path: Path, data: dict[str, Any]) -> Pipeline:
    config = parse_config({"monitor": {"enabled": False}, **data})
    return build_pipeline(config, BuildContext(state_dir=tmp_path / "state"))


def shipper_config(url: str, **sink: Any) -> dict[str, Any]:
    return {
        "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
        "sinks": [
            {
                "type": "nats",
                "servers": [url],
                "subject": "logs.{host}",
                "stream": "LOGS",
                "max_message_events": 100,
                **sink,
            }
        ],
    }


def indexer_config(url: str, out: Path, **source: Any) -> dict[str, Any]:
    return {
        "inputs": [{"type": "nats", "servers": [url], "stream": "LOGS", **source}],
        "sinks": [{"type": "file", "path": str(out)}],
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


async def with_js(url: str, body: Callable[[Any], Awaitable[Any]]) -> Any:
    client = await nats.connect(url)
    try:
        return await body(client)
    finally:
        await client.close()


def test_shipper_to_indexer_delivers_every_event_once(
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    out = tmp_path / "indexed.ndjson"

    async def main() -> None:
        shipper = pipeline(tmp_path / "s", shipper_config(nats_server.url))
        indexer = pipeline(tmp_path / "i", indexer_config(nats_server.url, out, batch=50))
        await shipper.start()
        await indexer.start()
        address = shipper.inputs[0].address  # type: ignore[attr-defined]
        await asyncio.gather(
            send_tcp(address, lines(*numbered(3000, host="web-1"))),
            send_tcp(address, lines(*numbered(2000, start=3000, host="db.2"))),
        )
        sink = shipper.sinks[0].sink
        await eventually(lambda: sink.metrics.events_out == 5000, 20)
        await eventually(lambda: len(read_events(out)) >= 5000, 20)
        source = indexer.inputs[0]
        assert isinstance(source, NatsInput)
        await eventually(lambda: source.held == 0, 10)

        async def facts(client: Any) -> tuple[Any, Any]:
            js = client.jetstream()
            return await js.stream_info("LOGS"), await js.consumer_info("LOGS", "indexers")

        stream, consumer = await with_js(nats_server.url, facts)
        assert stream.config.subjects == ["logs.>"]
        # At most 100 events a message (a write's remainder makes a smaller one).
        assert 50 <= stream.state.messages < 100
        assert consumer.num_ack_pending == 0 and consumer.num_pending == 0
        assert source.acked == stream.state.messages
        await indexer.stop()
        await shipper.stop()

    run(main(), 60)
    events = read_events(out)
    assert sorted(event["seq"] for event in events) == list(range(5000))
    assert {event["host"] for event in events} == {"web-1", "db.2"}


def test_stream_is_created_with_the_sinks_settings_or_used_as_it_is(
    nats_server: NatsServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"max_bytes": 50_000_000, "max_age_secs": 3600, "duplicate_window_secs": 60}

    async def main() -> None:
        first = pipeline(tmp_path / "a", shipper_config(nats_server.url, **settings))
        await first.start()
        sink = first.sinks[0].sink
        assert isinstance(sink, NatsSink)
        await asyncio.wait_for(sink._ready.wait(), 10)
        info = await with_js(nats_server.url, lambda c: c.jetstream().stream_info("LOGS"))
        assert info.config.max_bytes == 50_000_000
        assert info.config.max_age == 3600
        assert info.config.duplicate_window == 60
        assert getattr(info.config.discard, "value", info.config.discard) == "new"
        assert info.config.num_replicas == 1
        assert sink.stream_differences == []
        await first.stop()
        other = pipeline(tmp_path / "b", shipper_config(nats_server.url, max_bytes=1_000_000))
        await other.start()
        sink = other.sinks[0].sink
        assert isinstance(sink, NatsSink)
        await asyncio.wait_for(sink._ready.wait(), 10)
        await other.stop()
        assert any(d.startswith("max_bytes 50000000") for d in sink.stream_differences)
        assert any(d.startswith("max_age 3600") for d in sink.stream_differences)

    with caplog.at_level(logging.WARNING):
        run(main(), 30)
    assert "using the existing stream LOGS, whose settings differ" in caplog.text


def test_a_retried_message_is_stored_once(
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    async def main() -> None:
        shipper = pipeline(tmp_path, shipper_config(nats_server.url))
        await shipper.start()
        sink = shipper.sinks[0].sink
        assert isinstance(sink, NatsSink)
        (message,) = sink.encode(numbered(10))
        assert message.msg_id == f"{sink.producer}:{sink.epoch}:1"
        await sink.publish([message])
        await sink.publish([Message(message.subject, message.msg_id, message.payload, 10)])
        assert sink.duplicates == 1
        info = await with_js(nats_server.url, lambda c: c.jetstream().stream_info("LOGS"))
        assert info.state.messages == 1
        await shipper.stop()

    run(main(), 30)


def test_bad_envelopes_are_counted_dead_lettered_and_terminated(
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    out = tmp_path / "indexed.ndjson"
    good = b"".join(orjson.dumps(e) + b"\n" for e in numbered(4))
    frame = lz4.frame.compress(good, content_checksum=True)
    dead: list[Msg] = []

    async def main() -> None:
        client = await nats.connect(nats_server.url)
        js = client.jetstream()
        await js.add_stream(name="LOGS", subjects=["logs.>"])

        async def collect(msg: Msg) -> None:
            dead.append(msg)

        await client.subscribe("dead.logs", cb=collect)
        await js.publish("logs.a", b"\x00\x01 not an envelope")
        await js.publish("logs.a", frame[: len(frame) // 2])  # a truncated LZ4 frame
        await js.publish("logs.a", b'{"message": "ok 1"}\n[1, 2]\n{"message": "ok 2"}\n')
        await js.publish("logs.a", frame)
        await js.publish("logs.a", frame, headers={"logstream": "7"})  # unknown version
        indexer = pipeline(
            tmp_path,
            indexer_config(
                nats_server.url, out, dead_letter_subject="dead.logs", ack_wait_secs=1.0
            ),
        )
        await indexer.start()
        source = indexer.inputs[0]
        assert isinstance(source, NatsInput)
        await eventually(lambda: len(read_events(out)) == 6 and len(dead) == 3, 10)
        await asyncio.sleep(2.5)  # past ack_wait: nothing comes back
        info = await js.consumer_info("LOGS", "indexers")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0
        assert source.metrics.dropped == {"bad_envelope": 3, "bad_envelope_line": 1}
        assert source.terminated == 3 and source.acked == 2
        text = indexer.registry.exposition().decode()
        for reason in ("not_an_envelope", "truncated_frame", "unknown_version"):
            assert (
                f'logstream_nats_terminated_total{{kind="input",reason="{reason}",unit="nats"}} 1.0'
            ) in text, text
        await indexer.stop()
        await client.close()

    run(main(), 30)
    assert sorted(e["message"] for e in read_events(out)) == [
        "event 0",
        "event 1",
        "event 2",
        "event 3",
        "ok 1",
        "ok 2",
    ]
    assert dead[0].data == b"\x00\x01 not an envelope"
    assert "truncated LZ4 frame" in dead[1].headers["Logstream-Error"]  # type: ignore[index]
    assert dead[2].headers["Nats-Sequence"] == "5"  # type: ignore[index]


def test_redelivered_messages_are_counted(nats_server: NatsServer, tmp_path: Path) -> None:
    """A message another indexer fetched and never acked comes again after ack_wait:
    counted in logstream_nats_redelivered_total, and its events are delivered."""
    out = tmp_path / "indexed.ndjson"
    frame = lz4.frame.compress(
        b"".join(orjson.dumps(e) + b"\n" for e in numbered(3)), content_checksum=True
    )

    async def main() -> None:
        client = await nats.connect(nats_server.url)
        js = client.jetstream()
        await js.add_stream(name="LOGS", subjects=["logs.>"])
        config = parse_config(indexer_config(nats_server.url, out, ack_wait_secs=1.0))
        source_config = config.inputs[0]
        assert isinstance(source_config, NatsInputConfig)
        await js.add_consumer("LOGS", source_config.consumer_config())
        await js.publish("logs.a", frame, headers={"logstream": "1", "encoding": "lz4"})
        await js.publish("logs.a", frame, headers={"logstream": "1", "encoding": "lz4"})
        # A crashed indexer: it fetched the first message and never acked it.
        crashed = await js.pull_subscribe_bind("indexers", "LOGS")
        (taken,) = await crashed.fetch(1, timeout=5)
        assert taken.metadata.num_delivered == 1
        await asyncio.sleep(1.5)  # past ack_wait: the message is up for redelivery
        indexer = pipeline(tmp_path, indexer_config(nats_server.url, out, ack_wait_secs=1.0))
        await indexer.start()
        await eventually(lambda: len(read_events(out)) == 6, 10)
        source = indexer.inputs[0]
        assert isinstance(source, NatsInput)
        assert source.metrics.nats_redelivered == 1
        text = indexer.registry.exposition().decode()
        assert 'logstream_nats_redelivered_total{kind="input",unit="nats"} 1.0' in text, text
        await indexer.stop()
        await client.close()

    run(main(), 30)


def test_messages_are_acked_only_once_safe_and_kept_alive_meanwhile(
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    from tests.support.units import CollectingSink

    async def main() -> None:
        shipper = pipeline(tmp_path / "s", shipper_config(nats_server.url))
        await shipper.start()
        sink = shipper.sinks[0].sink
        assert isinstance(sink, NatsSink)
        await sink.write(numbered(500))
        config = parse_config(
            {
                "inputs": [
                    {
                        "type": "nats",
                        "servers": [nats_server.url],
                        "ack_wait_secs": 1.0,
                        "batch": 10,
                    }
                ],
                "sinks": [{"type": "stdout"}],
                "monitor": {"enabled": False},
            }
        )
        built = build_pipeline(config, BuildContext(state_dir=tmp_path / "i"))
        gate = asyncio.Event()
        collecting = CollectingSink("gated", built.registry, gate=gate)
        collecting.spooled = True  # the pipeline writes at once; safe when write returns
        from logstream.pipeline import SinkRunner, SinkSettings

        indexer = Pipeline(built.inputs, [], [SinkRunner(collecting, SinkSettings())])
        await indexer.start()
        source = indexer.inputs[0]
        assert isinstance(source, NatsInput)
        await eventually(lambda: source.held == 5, 10)
        await asyncio.sleep(2.5)  # more than twice ack_wait: in_progress keeps them
        info = await with_js(
            nats_server.url, lambda c: c.jetstream().consumer_info("LOGS", "indexers")
        )
        assert info.num_ack_pending == 5 and info.num_redelivered == 0
        assert source.acked == 0
        gate.set()
        await eventually(lambda: source.acked == 5, 10)
        assert len(collecting.events) == 500
        await indexer.stop()
        await shipper.stop()


@pytest.mark.integration
def test_max_ack_pending_bounds_what_an_indexer_holds(
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    """5 messages waiting, max_ack_pending 3: the indexer never holds more than 3 while
    its sink does not take them; all 5 once it does."""
    from logstream.pipeline import SinkRunner, SinkSettings
    from tests.support.units import CollectingSink

    async def main() -> None:
        shipper = pipeline(tmp_path / "s", shipper_config(nats_server.url))
        await shipper.start()
        await shipper.sinks[0].sink.write(numbered(500))
        config = parse_config(
            {
                "inputs": [
                    {
                        "type": "nats",
                        "servers": [nats_server.url],
                        "batch": 10,
                        "max_ack_pending": 3,
                    }
                ],
                "sinks": [{"type": "stdout"}],
                "monitor": {"enabled": False},
            }
        )
        built = build_pipeline(config, BuildContext(state_dir=tmp_path / "i"))
        gate = asyncio.Event()
        collecting = CollectingSink("gated", built.registry, gate=gate)
        collecting.spooled = True
        indexer = Pipeline(built.inputs, [], [SinkRunner(collecting, SinkSettings())])
        await indexer.start()
        source = indexer.inputs[0]
        assert isinstance(source, NatsInput)
        await eventually(lambda: source.held == 3, 10)
        await asyncio.sleep(2.5)  # more fetches come back empty
        assert source.held == 3
        info = await with_js(
            nats_server.url, lambda c: c.jetstream().consumer_info("LOGS", "indexers")
        )
        assert info.num_ack_pending == 3 and info.num_pending == 2
        gate.set()
        await eventually(lambda: source.acked == 5, 15)
        assert len(collecting.events) == 500
        await indexer.stop()
        await shipper.stop()

    run(main(), 40)

    run(main(), 40)


def test_credentials_work_and_are_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-Pa55"  # noqa: S105 - the test server's password
    from logstream.local.nats import find_nats_server

    find_nats_server()
    extra = [f'authorization {{ user: shipper, password: "{secret}" }}']
    with NatsServer(tmp_path / "auth", extra_config=extra) as server:
        out = tmp_path / "out.ndjson"
        bad_url = f"nats://shipper:wrong-{secret}@127.0.0.1:{server.port}"

        async def main() -> None:
            shipper = pipeline(
                tmp_path / "s",
                shipper_config(server.url, user="shipper", password=secret),
            )
            indexer = pipeline(tmp_path / "i", indexer_config(bad_url, out))
            await shipper.start()
            await indexer.start()
            sink = shipper.sinks[0].sink
            assert isinstance(sink, NatsSink)
            await sink.write(numbered(5))
            assert sink.metrics.events_out == 5
            await asyncio.sleep(1.5)  # the indexer keeps failing authorization
            assert read_events(out) == []
            await indexer.stop()
            await shipper.stop()

        with caplog.at_level(logging.DEBUG):
            run(main(), 30)
    assert "Authorization" in caplog.text or "authorization" in caplog.text
    assert secret not in caplog.text
    assert mask_url(bad_url) == f"nats://shipper:***@127.0.0.1:{server.port}"
    with pytest.raises(ConfigError, match="bad port") as error:
        parse_config(indexer_config(f"nats://u:{secret}@host:notaport", out))
    assert secret not in str(error.value)


def test_subject_template() -> None:
    render = compile_subject("logs.{host}.{level}", "_")
    assert render({"host": "web.1", "level": "ERROR"}) == "logs.web_1.ERROR"
    assert render({"host": "a b*>", "level": None}) == "logs.a_b__._"
    for bad in ("{host}.logs", "logs..x", "logs.*", "logs.{host", "logs x"):
        with pytest.raises(ValueError, match=r"subject|brace"):
            compile_subject(bad, "_")


def test_local_servers_are_found_in_the_config_and_shared(tmp_path: Path) -> None:
    from logstream.local.nats import find_nats_server

    find_nats_server()
    data = {
        "inputs": [{"type": "nats", "servers": ["local"]}],
        "sinks": [{"type": "nats", "servers": "local"}],
    }
    assert local_needs(data) == {"nats"}
    config = parse_config(data, local_urls={"nats": "nats://127.0.0.1:4999"})
    assert config.inputs[0].servers == ["nats://127.0.0.1:4999"]  # type: ignore[union-attr]
    first = LocalNats(tmp_path / "nats")
    first.start()
    second = LocalNats(tmp_path / "nats")
    try:
        second.start()  # finds the running one
        assert second.url == first.url
        pid = orjson.loads((tmp_path / "nats" / "server.json").read_bytes())["pid"]

        async def owner_stops_while_in_use() -> None:
            client = await nats.connect(first.url)
            await asyncio.to_thread(first.stop)  # a client is connected: left running
            await client.flush()
            assert client.is_connected
            await client.close()

        run(owner_stops_while_in_use())
        second.stop()  # the last one out stops it
    finally:
        first.stop()
        second.stop()
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes()[:40]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the local nats-server is still running")
    assert not (tmp_path / "nats" / "server.json").exists()


def test_an_outage_blocks_writes_until_a_server_answers(tmp_path: Path) -> None:
    from logstream.local.nats import find_nats_server

    find_nats_server()
    server = NatsServer(tmp_path / "late")  # ports chosen, not started yet

    async def main() -> None:
        shipper = pipeline(tmp_path / "s", shipper_config(server.url))
        await shipper.start()  # does not fail: the server is down
        sink = shipper.sinks[0].sink
        assert isinstance(sink, NatsSink)
        write = asyncio.create_task(sink.write(numbered(300)))
        await asyncio.sleep(1.0)
        assert not write.done()  # backpressure: the events are not safe yet
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(write, 20)
        assert sink.metrics.events_out == 300
        info = await with_js(server.url, lambda c: c.jetstream().stream_info("LOGS"))
        assert info.state.messages == 3
        await shipper.stop()

    try:
        run(main(), 40)
    finally:
        server.stop()


def test_the_spool_keeps_messages_until_the_stream_takes_them(tmp_path: Path) -> None:
    from logstream.local.nats import find_nats_server

    find_nats_server()
    server = NatsServer(tmp_path / "late")
    spooled = shipper_config(server.url, spool={"enabled": True, "fsync": "never"})

    async def main() -> None:
        shipper = pipeline(tmp_path / "s", spooled)
        await shipper.start()
        sink = shipper.sinks[0].sink
        assert isinstance(sink, NatsSink)
        await asyncio.wait_for(sink.write(numbered(250)), 5)  # on disk: safe at once
        assert sink.spool is not None and sink.spool.pending_entries == 3
        await shipper.stop()  # the server never came: the messages stay in the spool
        await asyncio.to_thread(server.start)
        again = pipeline(tmp_path / "s", spooled)
        await again.start()
        sink = again.sinks[0].sink
        assert isinstance(sink, NatsSink)
        await eventually(lambda: sink.metrics.events_out == 250, 20)
        await eventually(lambda: sink.spool is not None and sink.spool.pending_entries == 0, 5)
        info = await with_js(server.url, lambda c: c.jetstream().stream_info("LOGS"))
        assert info.state.messages == 3
        await again.stop()

    try:
        run(main(), 40)
    finally:
        server.stop()


def test_mutual_tls_to_the_server(tmp_path: Path) -> None:
    from logstream.local.nats import find_nats_server
    from tests.support.tls import make_certificates

    find_nats_server()
    certs = make_certificates(tmp_path / "certs")
    extra = [
        f'tls {{ cert_file: "{certs.cert}", key_file: "{certs.key}", '
        f'ca_file: "{certs.ca}", verify: true }}'
    ]
    out = tmp_path / "out.ndjson"
    with NatsServer(tmp_path / "tls", extra_config=extra) as server:
        url = f"tls://127.0.0.1:{server.port}"
        tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert)}
        tls["key_file"] = str(certs.client_key)

        async def main() -> None:
            shipper = pipeline(tmp_path / "s", shipper_config(url, tls=tls))
            no_cert = pipeline(
                tmp_path / "n", indexer_config(url, out, tls={"ca_file": tls["ca_file"]})
            )
            await shipper.start()
            await no_cert.start()
            sink = shipper.sinks[0].sink
            assert isinstance(sink, NatsSink)
            await asyncio.wait_for(sink.write(numbered(20)), 15)
            assert sink.metrics.events_out == 20
            await asyncio.sleep(1.0)
            assert read_events(out) == []  # refused: no client certificate
            await no_cert.stop()
            indexer = pipeline(tmp_path / "i", indexer_config(url, out, tls=tls))
            await indexer.start()
            await eventually(lambda: len(read_events(out)) == 20, 15)
            await indexer.stop()
            await shipper.stop()

        run(main(), 60)


def test_a_beats_window_is_acked_only_once_jetstream_has_its_events(tmp_path: Path) -> None:
    import struct

    from logstream.local.nats import find_nats_server

    find_nats_server()
    server = NatsServer(tmp_path / "late")  # down while the window arrives
    frames = struct.pack(">BBI", ord("2"), ord("W"), 3) + b"".join(
        struct.pack(">BBII", ord("2"), ord("J"), n + 1, len(body)) + body
        for n, body in enumerate(orjson.dumps(event) for event in numbered(3))
    )

    async def main() -> None:
        config = shipper_config(server.url)
        config["inputs"] = [{"type": "beats", "listen": "127.0.0.1:0"}]
        shipper = pipeline(tmp_path / "s", config)
        await shipper.start()
        reader, writer = await asyncio.open_connection(*shipper.inputs[0].address)  # type: ignore[attr-defined]
        writer.write(frames)
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(6), 1.5)  # no ACK: not in the stream
        await asyncio.to_thread(server.start)
        ack = await asyncio.wait_for(reader.readexactly(6), 15)
        assert ack == struct.pack(">BBI", ord("2"), ord("A"), 3)
        info = await with_js(server.url, lambda c: c.jetstream().stream_info("LOGS"))
        assert info.state.messages == 1
        writer.close()
        await shipper.stop()

    try:
        run(main(), 40)
    finally:
        server.stop()


def test_a_file_checkpoint_passes_lines_only_once_jetstream_has_them(tmp_path: Path) -> None:
    """The file input's checkpoint is the file's Beats ACK: while JetStream is down it
    stays where it was, and a restart then reads the unacknowledged lines again."""
    from logstream.local.nats import find_nats_server

    find_nats_server()
    server = NatsServer(tmp_path / "late")  # down while the lines are read
    log_file = tmp_path / "app.log"
    log_file.write_bytes(b"".join(b"line %d\n" % n for n in range(50)))
    checkpoint = tmp_path / "checkpoint.json"

    def offset() -> int:
        if not checkpoint.exists():
            return 0
        files = orjson.loads(checkpoint.read_bytes())["files"]
        return sum(int(entry["offset"]) for entry in files.values())

    async def main() -> None:
        config = shipper_config(server.url)
        config["inputs"] = [
            {
                "type": "file",
                "paths": [str(log_file)],
                "start_position": "beginning",
                "checkpoint_file": str(checkpoint),
                "checkpoint_interval_secs": 0.1,
            }
        ]
        shipper = pipeline(tmp_path / "s", config)
        await shipper.start()
        await asyncio.sleep(1.5)  # read, handed to the sink, not in the stream
        assert offset() == 0
        await asyncio.to_thread(server.start)
        deadline = asyncio.get_running_loop().time() + 20
        while offset() < log_file.stat().st_size:
            assert asyncio.get_running_loop().time() < deadline, offset()
            await asyncio.sleep(0.1)
        info = await with_js(server.url, lambda c: c.jetstream().stream_info("LOGS"))
        assert info.state.messages >= 1
        await shipper.stop()

    try:
        run(main(), 60)
    finally:
        server.stop()


def test_a_redelivered_envelope_gives_the_same_elasticsearch_ids(tmp_path: Path) -> None:
    from logstream.bulk import BulkEncoder
    from logstream.metrics import Registry
    from logstream.payload import decode

    sink = NatsSink(
        parse_config(shipper_config("nats://127.0.0.1:1")).sinks[0],  # type: ignore[arg-type]
        "nats",
        BuildContext(registry=Registry(), state_dir=tmp_path),
    )
    events = [{**event, "@timestamp": "2026-11-24T10:00:00.000Z"} for event in numbered(50)]
    events += [{"message": "same line", "host": "web-1"}] * 2  # no position: content hash
    (message,) = sink.encode(events)
    encoder = BulkEncoder("logs-%{+YYYY.MM.dd}")
    first = [encoder.encode(event)[0] for event in decode(message.payload).events]
    again = [encoder.encode(event)[0] for event in decode(message.payload).events]
    assert first == again
    assert len(set(first)) == 51  # two identical events are one document (documented)
