"""The ``nats`` sink: event batches into a NATS JetStream stream, safe once acknowledged.

::

    sinks:
      - type: nats
        servers: ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]   # or [local]
        subject: "logs.{host}"       # a template of event fields; stream subjects: logs.>
        stream: LOGS
        replicas: 3                  # used when the sink creates the stream
        max_bytes: 1073741824        # with discard: new, a full stream pushes back
        encoding: lz4                # the batch envelope of docs/mqtt-payload.md

What a message is: the project's batch envelope (:mod:`logstream.payload`),
up to ``max_message_events`` events as NDJSON in one LZ4 frame (or ``ndjson``,
``zstd``), with headers ``logstream: 1``, ``encoding``, ``events`` and
``Content-Type`` (the MQTT 5 user properties of the same format) and
``Nats-Msg-Id: <producer>:<epoch>:<seq>``. ``logstream.payload.decode`` reads
it, and so does the ``nats`` input.

When events are safe: the sink is *spooled* in the pipeline's sense
(:class:`~logstream.units.Sink`): the pipeline calls ``write`` straight from
its filter task, and ``write`` returns only once JetStream has acknowledged
every message of the batch (a ``PubAck``: stored, and replicated to a quorum
of an R3 stream). Only then are the events safe, so a Beats window is ACKed
and a file checkpoint moves only for events that are in the stream. With
``spool.enabled`` they are safe once appended to the disk spool instead, and
a drain task publishes the spool. As for a spooled Elasticsearch sink, the
common ``buffer_max_events``, ``when_full`` and batching settings do not
apply: the bounded buffer in front of the sink is the pipeline's ingest
buffer (raise ``pipeline.filter_batch_max_events`` for fewer, larger writes),
and a sink that cannot publish always pushes back.

Delivery: up to ``max_in_flight`` messages are published at once
(``publish_async``); a message not acknowledged within ``ack_timeout_secs``
(a server died, a stream leader is being elected, the stream is full with
``discard: new``) is published again with the *same* ``Nats-Msg-Id``, after a
backoff, until it is acknowledged. JetStream drops a repeat seen within the
stream's ``duplicate_window`` and answers with a duplicate ``PubAck``, which
counts as success. A message larger than the server's ``max_payload`` even
with one event is dropped as ``rejected``. While no server answers, writes
wait: the pipeline's buffers fill and the inputs stop reading (backpressure),
or, with the spool, the spool grows.

The stream: created at start when missing (``create_stream``), with this
sink's subjects, replicas, storage, ``max_age_secs``, ``max_bytes``,
``discard`` and ``duplicate_window_secs``; an existing stream is used as it
is, and each setting that differs from the sink's is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, PubAck, StorageType, StreamConfig
from pydantic import Field, field_validator, model_validator

from logstream.event import Batch, Event
from logstream.natsconn import NatsConnection, NatsConnectionConfig, describe
from logstream.payload import (
    CONTENT_TYPES,
    FORMAT_VERSION,
    PROP_ENCODING,
    PROP_EVENTS,
    PROP_VERSION,
    BatchEncoder,
)
from logstream.sinks.elasticsearch import SpoolConfig
from logstream.spool import Spool, SpoolBatch, SpoolClosed
from logstream.tasks import stop_task
from logstream.units import BuildContext, Sink, SinkConfig

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
MSG_ID: Final = "Nats-Msg-Id"
# Room left for the headers when a message is sized against the server's max_payload.
_HEADER_ROOM: Final = 512
# Characters event data may not put into a subject token (each becomes "_").
_UNSAFE_IN_TOKEN: Final = re.compile(r"[.*>\s\x00-\x1f\x7f]")
_FIELD: Final = re.compile(r"\{([A-Za-z0-9_@.\-]+)\}")
_TOKEN: Final = re.compile(r"[^.*>\s\x00-\x1f\x7f]+")


class NatsSinkConfig(SinkConfig, NatsConnectionConfig):
    """Publish event batches to a NATS JetStream stream."""

    type: Literal["nats"]
    subject: str = Field(
        default="logs.{host}",
        description="Subject template; {field} is an event field (dots and wildcards in "
        "values become _). It must start with a literal token.",
    )
    missing: str = Field(default="_", description="Subject token for a missing field.")
    stream: str = Field(default="LOGS", description="The JetStream stream.")
    create_stream: bool = Field(default=True, description="Create the stream when it is missing.")
    stream_subjects: list[str] | None = Field(
        default=None, description="Subjects of a stream the sink creates (default: from subject)."
    )
    replicas: int = Field(default=1, ge=1, le=5, description="Replicas of a created stream.")
    storage: Literal["file", "memory"] = "file"
    max_age_secs: float = Field(default=86_400.0, ge=0, description="0: keep for ever.")
    max_bytes: int = Field(default=1024 * MIB, ge=-1, description="-1: no limit.")
    discard: Literal["new", "old"] = Field(
        default="new", description="At max_bytes: new refuses writes (backpressure), old drops."
    )
    duplicate_window_secs: float = Field(
        default=120.0, gt=0, description="How long JetStream remembers message ids."
    )
    encoding: Literal["lz4", "ndjson", "zstd"] = "lz4"
    compression_level: int | None = None
    max_message_bytes: int = Field(
        default=1 * MIB, ge=1024, description="A message at most (capped by the server's)."
    )
    max_message_events: int = Field(default=1000, ge=1, description="Events per message.")
    max_in_flight: int = Field(
        default=256, ge=1, le=10_000, description="Messages published and not yet acknowledged."
    )
    ack_timeout_secs: float = Field(default=5.0, gt=0, description="Wait for a PubAck this long.")
    retry_initial_secs: float = Field(default=0.2, gt=0)
    retry_max_secs: float = Field(default=5.0, gt=0)
    producer: str | None = Field(
        default=None, description="Message id prefix (default: host name, sink and worker)."
    )
    spool: SpoolConfig = Field(default_factory=SpoolConfig)

    @field_validator("subject")
    @classmethod
    def _valid_subject(cls, value: str) -> str:
        compile_subject(value, "_")
        return value

    @field_validator("missing")
    @classmethod
    def _valid_missing(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError("must be one subject token: no dots, spaces, * or >")
        return value

    @model_validator(mode="after")
    def _retries(self) -> NatsSinkConfig:
        if self.retry_max_secs < self.retry_initial_secs:
            raise ValueError("retry_max_secs must be at least retry_initial_secs")
        return self

    def subjects_of_stream(self) -> list[str]:
        if self.stream_subjects:
            return list(self.stream_subjects)
        head = self.subject.split("{", 1)[0]
        if "{" not in self.subject:
            return [self.subject]
        return [head + ">"]

    def build(self, name: str, ctx: BuildContext) -> NatsSink:
        return NatsSink(self, name, ctx)


def compile_subject(template: str, missing: str) -> Callable[[Event], str]:
    """``"logs.{host}"`` -> ``event -> "logs.web-1"``; ``ValueError`` for a bad template."""
    if not template or template.startswith("{"):
        raise ValueError("the subject must start with a literal token, like logs.{host}")
    literals = _FIELD.split(template)  # literal, field, literal, field, ..., literal
    skeleton = "".join(
        "x" if index % 2 else literal.replace("{", "").replace("}", "")
        for index, literal in enumerate(literals)
    )
    if "{" in "".join(literals[::2]) or "}" in "".join(literals[::2]):
        raise ValueError(f"{template!r}: braces may only enclose a field name")
    for part in skeleton.split("."):
        if not _TOKEN.fullmatch(part):
            raise ValueError(
                f"{template!r} is not a valid subject: no empty tokens, spaces, * or >"
            )
    fields = literals[1::2]
    if not fields:
        return lambda event: template
    parts = literals[::2]
    cache: dict[Any, str] = {}

    def token(value: Any) -> str:
        if type(value) is str:
            hit = cache.get(value)
            if hit is not None:
                return hit
        if value is None or isinstance(value, dict | list) or value == "":
            return missing
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        result = _UNSAFE_IN_TOKEN.sub("_", text)
        if type(value) is str:
            if len(cache) >= 4096:
                cache.clear()
            cache[value] = result
        return result

    def render(event: Event) -> str:
        out = [parts[0]]
        for field, literal in zip(fields, parts[1:], strict=True):
            out.append(token(event.get(field)))
            out.append(literal)
        return "".join(out)

    return render


@dataclass(slots=True)
class Message:
    """One envelope to publish, with the id it keeps across retries."""

    subject: str
    msg_id: str
    payload: bytes
    events: int

    def to_entry(self) -> bytes:
        """The message as one spool entry."""
        head = f"{self.subject}\x00{self.msg_id}\x00{self.events}\x00".encode()
        return head + self.payload

    @classmethod
    def from_entry(cls, entry: bytes) -> Message:
        subject, msg_id, events, payload = entry.split(b"\x00", 3)
        return cls(subject.decode(), msg_id.decode(), payload, int(events))


class NatsSink(Sink):
    def __init__(self, config: NatsSinkConfig, name: str, ctx: BuildContext) -> None:
        super().__init__(name, ctx.registry.unit(name, "sink"))
        self.config = config
        self.connection = NatsConnection(config, f"sink {name}")
        self.encoder = BatchEncoder(
            self.metrics,
            config.encoding,
            max_payload_bytes=config.max_message_bytes - _HEADER_ROOM,
            max_events=config.max_message_events,
            level=config.compression_level,
        )
        self._subject_of = compile_subject(config.subject, config.missing)
        self._constant_subject = "{" not in config.subject
        host = socket.gethostname().split(".", 1)[0] or "host"
        self.producer = config.producer or f"{host}.{name}.w{ctx.worker}"
        self.epoch = int(time.time() * 1000)
        self._seq = 0
        self._encoding_headers = {
            PROP_VERSION: str(FORMAT_VERSION),
            PROP_ENCODING: config.encoding,
            "Content-Type": CONTENT_TYPES[config.encoding],
        }
        self._random = random.Random()  # noqa: S311 - backoff jitter
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        # Duplicate PubAcks (a retried message JetStream already had): success.
        self.duplicates = 0
        self.stream_differences: list[str] = []
        self.spooled = True  # write returns once the batch is acknowledged (or spooled)
        self.spool: Spool | None = None
        self.spool_path: Path | None = None
        if config.spool.enabled:
            self.spool_path = config.spool.path or ctx.state_dir / "spool" / name
        self._drain_task: asyncio.Task[None] | None = None
        self._spool_dropped = 0

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._connect_task = asyncio.create_task(self._connect(), name=f"connect:{self.name}")
        if self.spool_path is not None:
            self._open_spool(self.spool_path)

    async def _connect(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_once()
                return
            except (nats.errors.Error, OSError, ValueError) as error:
                attempt += 1
                log.error("sink %s: cannot connect: %s", self.name, describe(error))
                await self.connection.close()
                await asyncio.sleep(self._backoff(attempt))

    async def _connect_once(self) -> None:
        client = await self.connection.connect()
        server_max = client.max_payload
        if server_max and server_max - _HEADER_ROOM < self.encoder.max_payload_bytes:
            self.encoder.max_payload_bytes = max(1024, server_max - _HEADER_ROOM)
        self._js = client.jetstream(publish_async_max_pending=self.config.max_in_flight)
        await self._ensure_stream(self._js)
        self._ready.set()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        config = self.config
        attempt = 0
        while True:
            try:
                info = await js.stream_info(config.stream)
            except nats.js.errors.NotFoundError:
                if not config.create_stream:
                    log.error(
                        "sink %s: stream %s does not exist and create_stream is false; "
                        "waiting for it",
                        self.name,
                        config.stream,
                    )
                else:
                    try:
                        await js.add_stream(self.stream_config())
                    except Exception as error:
                        log.warning(
                            "sink %s: creating stream %s: %s",
                            self.name,
                            config.stream,
                            describe(error),
                        )
                    else:
                        log.info(
                            "sink %s: created stream %s (subjects %s, %d replicas, max_bytes %d, "
                            "discard %s)",
                            self.name,
                            config.stream,
                            ", ".join(config.subjects_of_stream()),
                            config.replicas,
                            config.max_bytes,
                            config.discard,
                        )
                        return
            except Exception as error:
                log.warning(
                    "sink %s: stream %s not available yet: %s",
                    self.name,
                    config.stream,
                    describe(error),
                )
            else:
                self._compare(info.config)
                return
            attempt += 1
            await asyncio.sleep(self._backoff(attempt))

    def stream_config(self) -> StreamConfig:
        config = self.config
        return StreamConfig(
            name=config.stream,
            subjects=config.subjects_of_stream(),
            num_replicas=config.replicas,
            storage=StorageType.FILE if config.storage == "file" else StorageType.MEMORY,
            max_age=config.max_age_secs,
            max_bytes=config.max_bytes,
            discard=DiscardPolicy.NEW if config.discard == "new" else DiscardPolicy.OLD,
            duplicate_window=min(config.duplicate_window_secs, config.max_age_secs or 1e12),
        )

    def _compare(self, existing: StreamConfig) -> None:
        """Log each setting of an existing stream that differs from this sink's."""
        wanted = self.stream_config()
        differences = []
        if not set(wanted.subjects or []) <= set(existing.subjects or []):
            differences.append(f"subjects {existing.subjects} (sink: {wanted.subjects})")
        for key in (
            "num_replicas",
            "storage",
            "max_age",
            "max_bytes",
            "discard",
            "duplicate_window",
        ):
            have, want = getattr(existing, key), getattr(wanted, key)
            if have != want and not (key == "max_age" and not have and not want):
                differences.append(f"{key} {_shown(have)} (sink: {_shown(want)})")
        self.stream_differences = differences
        if differences:
            log.warning(
                "sink %s: using the existing stream %s, whose settings differ from the sink's: %s",
                self.name,
                self.config.stream,
                "; ".join(differences),
            )
        else:
            log.info("sink %s: using the existing stream %s", self.name, self.config.stream)

    def _open_spool(self, path: Path) -> None:
        try:
            spool = Spool.open(
                path,
                self.config.spool.settings(),
            )
        except OSError as error:
            raise ValueError(
                f"sink {self.name}: spool {str(path)!r} cannot be used: {error}"
            ) from None
        self.spool = spool
        self.metrics.spool_corrupt_records += spool.recovery.corrupt_records
        self.metrics.spool_events = lambda: spool.pending_entries
        self.metrics.spool_bytes = lambda: spool.disk_bytes
        if spool.recovery.entries:
            log.warning(
                "sink %s: spool %s: %d messages from before to publish",
                self.name,
                path,
                spool.recovery.entries,
            )
        self._drain_task = asyncio.create_task(self._drain(spool), name=f"drain:{self.name}")

    async def close(self) -> None:
        task, self._drain_task = self._drain_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        spool, self.spool = self.spool, None
        if spool is not None:
            self._count_spool_drops(spool)
            left = spool.pending_entries
            await spool.close()
            if left:
                log.info(
                    "sink %s: %d messages stay in the spool for the next start", self.name, left
                )
        connect, self._connect_task = self._connect_task, None
        if connect is not None:
            await stop_task(connect, f"sink {self.name}")
        await self.connection.close()

    # ----------------------------------------------------------------------- writing

    def encode(self, batch: Batch) -> list[Message]:
        """The batch as envelopes, each with its own message id."""
        if self._constant_subject:
            groups: dict[str, list[Event]] = {self.config.subject: batch}
        else:
            groups = {}
            subject_of = self._subject_of
            for event in batch:
                subject = subject_of(event)
                group = groups.get(subject)
                if group is None:
                    groups[subject] = [event]
                else:
                    group.append(event)
        messages = []
        prefix = f"{self.producer}:{self.epoch}:"
        for subject, events in groups.items():
            for payload, count in self.encoder.encode(events):
                self._seq += 1
                messages.append(Message(subject, f"{prefix}{self._seq}", payload, count))
        return messages

    async def write(self, batch: Batch) -> None:
        messages = self.encode(batch)
        if not messages:
            return
        spool = self.spool
        if spool is None:
            await self.publish(messages)
            return
        try:
            await spool.append([message.to_entry() for message in messages])
        except SpoolClosed:
            self.metrics.drop(sum(message.events for message in messages), "shutdown")
            return
        self._count_spool_drops(spool)

    def _count_spool_drops(self, spool: Spool) -> None:
        dropped = spool.dropped_entries - self._spool_dropped
        if dropped:
            self._spool_dropped = spool.dropped_entries
            # Entries are messages; their event counts went with them.
            self.metrics.drop(dropped, "spool_full")
            log.warning("sink %s: spool full: %d oldest messages dropped", self.name, dropped)

    async def _drain(self, spool: Spool) -> None:
        while True:
            batch: SpoolBatch | None = await spool.read(self.config.max_in_flight)
            if batch is None:
                return
            messages = []
            for entry in batch.entries:
                try:
                    messages.append(Message.from_entry(entry))
                except ValueError:
                    self.metrics.spool_corrupt_records += 1
            await self.publish(messages)
            spool.ack(batch)

    async def publish(self, messages: list[Message]) -> None:
        """Publish until every message is acknowledged (or refused for good)."""
        pending = messages
        attempt = 0
        while pending:
            if not self._ready.is_set():
                await self._ready.wait()
            pending, reason = await self._attempt(pending)
            if not pending:
                return
            attempt += 1
            self.metrics.retries += len(pending)
            delay = self._backoff(attempt)
            log.warning(
                "sink %s: %d messages not acknowledged (%s); publishing them again in %.2fs "
                "(retry %d)",
                self.name,
                len(pending),
                reason,
                delay,
                attempt,
            )
            await asyncio.sleep(delay)

    async def _attempt(self, messages: list[Message]) -> tuple[list[Message], str]:
        """Publish ``messages`` once; return those to publish again, and why."""
        js = self._js
        if js is None:  # pragma: no cover - _ready is set after _js
            return messages, "not connected"
        config = self.config
        sent: list[tuple[Message, asyncio.Future[PubAck]]] = []
        failed: list[Message] = []
        reason = ""
        for message in messages:
            headers = {
                **self._encoding_headers,
                PROP_EVENTS: str(message.events),
                MSG_ID: message.msg_id,
            }
            try:
                future = await js.publish_async(
                    message.subject,
                    message.payload,
                    wait_stall=config.ack_timeout_secs,
                    stream=config.stream,
                    headers=headers,
                )
            except nats.errors.MaxPayloadError:
                self._refused(message)
                continue
            except (nats.errors.Error, nats.js.errors.Error, OSError) as error:
                failed.append(message)
                reason = describe(error)
                continue
            sent.append((message, future))
        if sent:
            _, late = await asyncio.wait(
                [future for _, future in sent], timeout=config.ack_timeout_secs
            )
            for future in late:
                future.cancel()  # frees its publish_async slot
        for message, future in sent:
            if future.cancelled():
                failed.append(message)
                reason = reason or f"no PubAck within {config.ack_timeout_secs}s"
                continue
            failure = future.exception()
            if failure is not None:
                failed.append(message)
                reason = describe(failure)
                continue
            ack = future.result()
            if ack.duplicate:
                self.duplicates += 1
            self.metrics.events_out += message.events
            self.metrics.bytes_out += len(message.payload)
        return failed, reason

    def _refused(self, message: Message) -> None:
        self.metrics.drop(message.events, "rejected")
        log.error(
            "sink %s: a message of %d events (%d bytes) is over the server's max_payload; dropped",
            self.name,
            message.events,
            len(message.payload),
        )

    def _backoff(self, attempt: int) -> float:
        config = self.config
        ceiling = min(
            config.retry_max_secs, config.retry_initial_secs * 2.0 ** min(attempt - 1, 30)
        )
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)


def _shown(value: Any) -> str:
    return str(getattr(value, "value", value))
