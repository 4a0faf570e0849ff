"""Operator commands beside ``run``: ``check --connect`` and ``replay --dlq``.

``logstream check --connect`` builds the config's sinks and asks each
destination whether it can be used: an Elasticsearch sink does ``GET /``
with its credentials and says what it found (Elasticsearch or OpenSearch,
version); an MQTT sink connects to its broker (each of its brokers); a NATS
sink logs in once and asks JetStream for its account. Exit status 0 when all
answered, 1 otherwise.

``logstream replay --dlq FILE`` sends a dead-letter file's documents again
through the config's Elasticsearch sink (``--sink`` picks one when there are
several): to the index each was meant for, with its id, as ``create``, so
running it twice indexes nothing twice. What is refused again goes to the
sink's dead-letter file as any refusal does (the replayed file is renamed
``*.replaying`` first, so a sink writing to the same path starts a new
file). Exit status 0 when every document is now in Elasticsearch.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from logstream.config import LOCAL_PLACEHOLDERS, Config, ConfigError
from logstream.dlq import DeadLetter, read_dead_letters
from logstream.natsconn import NatsConnection, NatsConnectionConfig
from logstream.secrets import mask_text, mask_url
from logstream.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkConfig, SpoolConfig
from logstream.sinks.mqtt import MqttSink, MqttSinkConfig
from logstream.sinks.nats import NatsSinkConfig
from logstream.units import BuildContext, Sink, SinkConfig

log = logging.getLogger(__name__)

_REPLAY_BATCH = 500


def _build_sink(config: Config, unit: SinkConfig, **changes: Any) -> Sink:
    """The sink of ``unit`` (a sink of ``config``), with ``changes`` to its settings:
    a command builds only the sink it needs, never the spool or the template."""
    name = config.unit_names()[id(unit)]
    settings = unit.model_copy(update=changes)
    try:
        return settings.build(name, BuildContext(state_dir=config.state_dir))
    except (ValueError, OSError) as error:
        raise ConfigError(str(error)) from None


async def check_connections(
    config: Config, out: list[str], local: Mapping[int, str] | None = None
) -> bool:
    """Ask every sink's destination whether it answers; append one line per sink
    to ``out``. True when all answered. Sinks in ``local`` (index -> server) name
    ``local``: ``run`` starts that server, so there is nothing to ask yet."""
    ok = True
    names = config.unit_names()
    for index, unit in enumerate(config.sinks):
        several = isinstance(unit, MqttSinkConfig) and len(unit.brokers) > 1
        if local and index in local and several:  # urls: [local, others]: ask the others
            sink = _build_sink(config, unit)
            line, good = await _check_mqtt(cast(MqttSink, sink), skip=LOCAL_PLACEHOLDERS["mqtt"])
            ok = ok and good
            out.append(mask_text(f"sink {sink.name} ({type(sink).__name__}): {line}"))
            continue
        if local and index in local:
            out.append(
                f"sink {names[id(unit)]} ({unit.type}): local: `logstream run` starts "
                f"{local[index]} on a free port (in {config.state_dir}); not probed"
            )
            continue
        if isinstance(unit, ElasticsearchSinkConfig):
            sink = _build_sink(config, unit, spool=SpoolConfig(), template=None)
            line, good = await _check_elasticsearch(cast(ElasticsearchSink, sink))
        elif isinstance(unit, MqttSinkConfig):
            sink = _build_sink(config, unit)
            line, good = await _check_mqtt(cast(MqttSink, sink))
        elif isinstance(unit, NatsSinkConfig):
            sink = _build_sink(config, unit)
            line, good = await _check_nats(unit, sink.name)
        else:
            sink = _build_sink(config, unit)
            line, good = "nothing to connect to", True
        ok = ok and good
        out.append(mask_text(f"sink {sink.name} ({type(sink).__name__}): {line}"))
    return ok


async def _check_elasticsearch(sink: ElasticsearchSink) -> tuple[str, bool]:
    hosts = ", ".join(mask_url(host) for host in sink.config.hosts)
    try:
        await sink.start()
        info = await sink.check()
    except (ConnectionError, PermissionError, ValueError) as error:
        return f"{hosts}: FAILED: {mask_text(str(error))}", False
    finally:
        await sink.close()
    return f"{hosts}: OK, {info.describe()}", True


async def _check_nats(config: NatsConnectionConfig, name: str) -> tuple[str, bool]:
    try:
        return await NatsConnection(config, f"sink {name}").check(), True
    except (ConnectionError, ValueError) as error:
        return f"{config.described_servers()}: FAILED: {mask_text(str(error))}", False


async def _check_mqtt(sink: MqttSink, skip: str | None = None) -> tuple[str, bool]:
    """Connect to each broker; ``skip``: the placeholder of ``local`` in ``urls``
    (`run` starts that broker), not asked."""
    asked = [c for c in sink.connections if c.broker.url != skip]
    try:
        for connection in asked:
            connection.start()
        await asyncio.gather(*(connection.wait_connected(5.0) for connection in asked))
        states = [(mask_url(c.where()), c.connected) for c in asked]
    finally:
        await sink.close()
    lines = [
        f"{url}: OK, connected" if up else f"{url}: FAILED: no connection within the wait"
        for url, up in states
    ]
    if len(asked) < len(sink.connections):
        lines.insert(0, "local: `logstream run` starts mosquitto; not probed")
    return ", ".join(lines), all(up for _, up in states)


def pick_elasticsearch_sink(config: Config, name: str | None) -> ElasticsearchSink:
    """The config's Elasticsearch sink named ``name`` (or its only one), built to send
    directly (no spool) and to give up in the end (about 5 min) when unset."""
    names = config.unit_names()
    units = [unit for unit in config.sinks if isinstance(unit, ElasticsearchSinkConfig)]
    if name is not None:
        units = [unit for unit in units if names[id(unit)] == name]
    if len(units) != 1:
        found = ", ".join(names[id(unit)] for unit in units) or "none"
        raise ConfigError(f"replay needs one elasticsearch sink (use --sink NAME); found: {found}")
    unit = units[0]
    retries = 8 if unit.max_retries is None else unit.max_retries
    sink = _build_sink(config, unit, spool=SpoolConfig(), max_retries=retries)
    return cast(ElasticsearchSink, sink)


async def replay(sink: ElasticsearchSink, path: Path, source: Path, out: list[str]) -> bool:
    """Send the dead letters of ``source`` (``path``, or where it was moved) again.
    True when all are delivered."""
    metrics = sink.metrics
    bad_lines = 0
    total = 0
    await sink.start()
    try:
        pending: list[DeadLetter] = []
        for record in read_dead_letters(source):
            if isinstance(record, str):
                log.error("%s", record)
                bad_lines += 1
                continue
            pending.append(record)
            total += 1
            if len(pending) >= _REPLAY_BATCH:
                await sink.replay(pending)
                pending = []
        if pending:
            await sink.replay(pending)
    finally:
        await sink.close()
    again = metrics.dropped.get("dead_letter", 0) + metrics.dropped.get("rejected", 0)
    lost = metrics.dropped.get("sink_error", 0)
    delivered = metrics.events_out - metrics.already_indexed
    out.append(
        f"replayed {total} dead letters from {path}: {delivered} indexed, "
        f"{metrics.already_indexed} already there, {again} refused again"
        + (f" (in {sink.dead_letters.path})" if again and sink.dead_letters else "")
        + (f", {lost} given up (sink_error)" if lost else "")
        + (f"; {bad_lines} lines were not dead-letter records" if bad_lines else "")
    )
    accounted = lost == 0 and bad_lines == 0  # each record indexed or dead-lettered again
    if source != path:
        if accounted:
            os.unlink(source)  # what was refused again is in the sink's new file
        else:
            out.append(f"the replayed records are kept in {source}")
    return accounted and again == 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def run_check_connect(
    config: Config, local: Mapping[int, str] | None = None
) -> tuple[bool, Sequence[str]]:
    out: list[str] = []
    ok = asyncio.run(check_connections(config, out, local))
    return ok, out


def run_replay(config: Config, path: Path, sink_name: str | None) -> tuple[bool, Sequence[str]]:
    sink = pick_elasticsearch_sink(config, sink_name)
    source = path
    if sink.dead_letters is not None and _same_file(sink.dead_letters.path, path):
        # The sink appends new refusals to this very path: read the records elsewhere.
        source = path.with_name(path.name + ".replaying")
        path.rename(source)
    out: list[str] = []
    ok = asyncio.run(replay(sink, path, source, out))
    return ok, out
