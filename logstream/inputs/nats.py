"""The ``nats`` input: a durable JetStream pull consumer shared by any number of indexers.

::

    inputs:
      - type: nats
        servers: ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]   # or [local]
        stream: LOGS
        consumer: indexers        # one durable consumer: the indexers share its messages
        batch: 200                # messages per fetch (never one at a time)
        ack_wait_secs: 30
        max_ack_pending: 1000     # messages fetched and not acked, over all indexers
        dead_letter_subject: logs_dead   # optional: where bad messages are copied

Every indexer binds to the same durable consumer (created with
``AckExplicit`` when missing; an existing one is used, and settings that
differ are logged) and pulls ``fetch(batch, heartbeat)``: JetStream hands each
message to one indexer at a time.

Acknowledgement: a message (one batch envelope, :mod:`logstream.payload`) is
acked only once all its events are *safe*, the same notion that ACKs a Beats
window: the pipeline has handed them to every sink, and a spooled sink has
them on disk (the Elasticsearch sink with ``spool``; the nats sink once
JetStream acknowledged them). Until then the message is unacked; while it
waits (the ingest buffer is full, a sink is slow) it is kept alive with
``in_progress`` every ``in_progress_secs``, so ``ack_wait`` is never reached
by a healthy indexer. An indexer that dies (``kill -9``) acks nothing more:
its messages are redelivered to the others after ``ack_wait_secs``. Events
handed to a sink's memory buffer but not yet delivered are lost with the
process *unless* that sink is spooled, which is why an indexer writing to
Elasticsearch should use the sink's spool. A redelivered message decodes to
the same events, so the Elasticsearch sink's deterministic ids
(``document_id: auto``) index each event once.

Memory is bounded by ``max_ack_pending`` (whole fleet) times the events in a
message, and the ingest buffer (``put`` waits while it is full).

Bad input from the bus: a message that is not a valid envelope (an unknown
encoding, a truncated or corrupt LZ4 frame, an unsupported format version) is
counted as dropped (``bad_envelope``, one per message), logged, copied to
``dead_letter_subject`` when set (with ``Logstream-Error``, ``Nats-Stream``
and ``Nats-Sequence`` headers) and terminated (``term``): never redelivered,
never a crash. Lines of a valid envelope that are not JSON objects are
dropped and counted as ``bad_envelope_line``; the other events go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import Field, model_validator

from logstream.buffer import BatchBuffer, BufferClosed
from logstream.metrics import UnitMetrics
from logstream.natsconn import NatsConnection, NatsConnectionConfig, describe
from logstream.payload import DEFAULT_MAX_DECODED_BYTES, PROP_EVENTS, PayloadError, decode
from logstream.tasks import stop_task
from logstream.units import BuildContext, Input, InputConfig

log = logging.getLogger(__name__)


class NatsInputConfig(InputConfig, NatsConnectionConfig):
    """Read batch envelopes from a JetStream stream through a shared durable consumer."""

    type: Literal["nats"]
    stream: str = Field(default="LOGS", description="The JetStream stream.")
    consumer: str = Field(default="indexers", description="The durable consumer's name.")
    create_consumer: bool = Field(default=True, description="Create the consumer when missing.")
    filter_subject: str | None = Field(default=None, description="Only these subjects.")
    batch: int = Field(default=200, ge=2, le=10_000, description="Messages per fetch.")
    fetch_timeout_secs: float = Field(default=5.0, ge=0.5, description="A fetch waits this long.")
    heartbeat_secs: float = Field(
        default=1.0, gt=0, description="Server heartbeats during a fetch (detect a dead pull)."
    )
    ack_wait_secs: float = Field(default=30.0, gt=0, description="Of a consumer created here.")
    max_ack_pending: int = Field(default=1000, ge=1, description="Of a consumer created here.")
    max_deliver: int = Field(default=-1, description="Of a consumer created here (-1: no limit).")
    in_progress_secs: float | None = Field(
        default=None, gt=0, description="Keep-alive of a waiting message (default ack_wait / 3)."
    )
    dead_letter_subject: str | None = Field(
        default=None, description="Where bad messages are copied before they are terminated."
    )
    max_decoded_bytes: int = Field(default=DEFAULT_MAX_DECODED_BYTES, ge=1024)

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> NatsInputConfig:
        if self.heartbeat_secs * 2 > self.fetch_timeout_secs:
            raise ValueError("heartbeat_secs must be at most half of fetch_timeout_secs")
        return self

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_secs,
            max_ack_pending=self.max_ack_pending,
            max_deliver=self.max_deliver,
            filter_subject=self.filter_subject,
        )

    def build(self, name: str, ctx: BuildContext) -> NatsInput:
        return NatsInput(self, name, ctx.registry.unit(name, "input"))


@dataclass(slots=True)
class _Held:
    """A fetched message not acked yet."""

    msg: Msg
    since: float  # monotonic time of the fetch, then of the last in_progress
    handed: bool = False  # its events are in the ingest buffer


class NatsInput(Input):
    def __init__(self, config: NatsInputConfig, name: str, metrics: UnitMetrics) -> None:
        super().__init__(name, metrics)
        self.config = config
        self.connection = NatsConnection(config, f"input {name}")
        self.keepalive_secs = config.in_progress_secs or config.ack_wait_secs / 3
        self._held: dict[int, _Held] = {}
        self._to_ack: list[Msg] = []
        self._ack_wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._stopping = False
        self.consumer_differences: list[str] = []
        # For logs and tests: messages acked, terminated, redelivered to us.
        self.acked = 0
        self.terminated = 0
        self.redelivered = 0
        self.fetches = 0

    @property
    def held(self) -> int:
        """Messages fetched and not acked yet."""
        return len(self._held)

    async def start(self, ingest: BatchBuffer) -> None:
        self._task = asyncio.create_task(self._run(ingest), name=f"input:{self.name}")
        self._acker = asyncio.create_task(self._ack_loop(), name=f"acks:{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        log.info(
            "input %s: %d fetches; messages: %d acked, %d redelivered to this indexer, "
            "%d terminated",
            self.name,
            self.fetches,
            self.acked,
            self.redelivered,
            self.terminated,
        )
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, f"input {self.name}")
        # Messages fetched but never handed to the pipeline: back to the others at once.
        for held in list(self._held.values()):
            if not held.handed:
                del self._held[id(held.msg)]
                with contextlib.suppress(Exception):
                    await held.msg.nak()
        # The rest is acked as the pipeline makes it safe; then the connection closes.
        self._closer = asyncio.create_task(self._close_when_acked(), name=f"close:{self.name}")

    async def _close_when_acked(self, timeout_secs: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_secs
        try:
            # Acks come from the pipeline's callbacks: poll for them, bounded.
            while (self._held or self._to_ack) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if self._held:
                log.info(
                    "input %s: %d messages not acked at shutdown; JetStream redelivers them",
                    self.name,
                    len(self._held),
                )
        finally:
            acker, self._acker = self._acker, None
            if acker is not None:
                acker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acker
            await self.connection.close()

    # ----------------------------------------------------------------------- fetching

    async def _run(self, ingest: BatchBuffer) -> None:
        attempt = 0
        while not self._stopping:
            try:
                await self._consume(ingest)
                return
            except BufferClosed:
                return
            except (nats.errors.Error, OSError, ValueError) as error:
                attempt += 1
                log.error("input %s: %s; starting over", self.name, describe(error))
                await self.connection.close()
                await asyncio.sleep(min(5.0, 0.2 * attempt))

    async def _consume(self, ingest: BatchBuffer) -> None:
        config = self.config
        client = await self.connection.connect()
        js = client.jetstream()
        await self._ensure_consumer(js)
        sub = await self._bind(js)
        failures = 0
        while not self._stopping:
            try:
                msgs = await sub.fetch(
                    config.batch, timeout=config.fetch_timeout_secs, heartbeat=config.heartbeat_secs
                )
            except nats.errors.TimeoutError:
                continue  # nothing to read
            except nats.errors.ConnectionClosedError:
                return
            except (nats.errors.Error, OSError) as error:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("input %s: fetch failed: %s", self.name, describe(error))
                await asyncio.sleep(min(2.0, 0.1 * failures))
                continue
            failures = 0
            self.fetches += 1
            now = time.monotonic()
            for msg in msgs:
                self._held[id(msg)] = _Held(msg, now)
            try:
                for msg in msgs:
                    await self._handle(msg, ingest)
            except BufferClosed:
                return

    async def _bind(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        attempt = 0
        while True:
            try:
                return await js.pull_subscribe_bind(
                    durable=self.config.consumer, stream=self.config.stream
                )
            except (nats.errors.Error, OSError) as error:
                attempt += 1
                log.warning("input %s: binding the consumer: %s", self.name, describe(error))
                await asyncio.sleep(min(5.0, 0.2 * attempt))

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        config = self.config
        attempt = 0
        while True:
            try:
                info = await js.consumer_info(config.stream, config.consumer)
            except nats.js.errors.NotFoundError as error:
                if not config.create_consumer:
                    log.error(
                        "input %s: consumer %s of stream %s: %s (create_consumer false); waiting",
                        self.name,
                        config.consumer,
                        config.stream,
                        describe(error),
                    )
                else:
                    try:
                        await js.add_consumer(config.stream, config.consumer_config())
                    except (nats.errors.Error, OSError) as failure:
                        log.warning(
                            "input %s: creating consumer %s: %s",
                            self.name,
                            config.consumer,
                            describe(failure),
                        )
                    else:
                        log.info(
                            "input %s: created durable consumer %s on stream %s",
                            self.name,
                            config.consumer,
                            config.stream,
                        )
                        return
            except (nats.errors.Error, OSError) as error:
                log.warning(
                    "input %s: stream %s not available yet: %s",
                    self.name,
                    config.stream,
                    describe(error),
                )
            else:
                self._compare(info.config)
                return
            attempt += 1
            await asyncio.sleep(min(5.0, 0.2 * attempt))

    def _compare(self, existing: ConsumerConfig) -> None:
        wanted = self.config.consumer_config()
        differences = []
        if existing.ack_policy != AckPolicy.EXPLICIT:
            differences.append(f"ack_policy {existing.ack_policy} (needs explicit)")
        for key in ("ack_wait", "max_ack_pending", "max_deliver", "filter_subject"):
            have, want = getattr(existing, key), getattr(wanted, key)
            if have != want and not (key == "filter_subject" and not have and not want):
                differences.append(f"{key} {have} (input: {want})")
        self.consumer_differences = differences
        if differences:
            log.warning(
                "input %s: using the existing consumer %s, whose settings differ: %s",
                self.name,
                self.config.consumer,
                "; ".join(differences),
            )

    async def _handle(self, msg: Msg, ingest: BatchBuffer) -> None:
        """Decode one message and hand its events to the pipeline (or reject it)."""
        self.metrics.bytes_in += len(msg.data)
        headers = msg.headers or {}
        try:
            if msg.metadata.num_delivered > 1:
                self.redelivered += 1
                self.metrics.nats_redelivered += 1
        except (nats.errors.Error, ValueError, IndexError):
            pass
        try:
            decoded = decode(
                msg.data,
                content_type=headers.get("Content-Type"),
                properties=headers,
                max_decoded_bytes=self.config.max_decoded_bytes,
            )
        except PayloadError as error:
            await self._reject(msg, headers, str(error))
            return
        events = decoded.events
        if decoded.errors:
            bad = sum(1 for text in decoded.errors if text.startswith("line "))
            if bad:
                self.metrics.drop(bad, "bad_envelope_line")
            log.warning(
                "input %s: message %s: %s", self.name, _where(msg), "; ".join(decoded.errors[:3])
            )
        held = self._held.get(id(msg))
        if not events:
            self._safe(msg)
            return
        self.metrics.events_in += len(events)
        await ingest.put(events)
        if held is not None:
            held.handed = True
        ingest.call_when_safe(ingest.accepted, partial(self._safe, msg))

    async def _reject(self, msg: Msg, headers: dict[str, str], reason: str) -> None:
        count = headers.get(PROP_EVENTS, "")
        self.metrics.drop(int(count) if count.isdigit() and int(count) > 0 else 1, "bad_envelope")
        log.error(
            "input %s: message %s is not a valid envelope: %s", self.name, _where(msg), reason
        )
        client = self.connection.client
        subject = self.config.dead_letter_subject
        if subject is not None and client is not None:
            try:
                meta = msg.metadata
                letter_headers = {
                    "Logstream-Error": reason[:500],
                    "Nats-Subject": msg.subject,
                    "Nats-Stream": meta.stream,
                    "Nats-Sequence": str(meta.sequence.stream),
                }
                await client.publish(subject, msg.data, headers=letter_headers)
            except (nats.errors.Error, OSError, ValueError) as error:
                log.error("input %s: dead-letter publish failed: %s", self.name, describe(error))
        self._held.pop(id(msg), None)
        try:
            await msg.term()
            self.terminated += 1
            self.metrics.nats_terminated[term_reason(reason)] += 1
        except (nats.errors.Error, OSError) as error:
            log.warning("input %s: term failed: %s", self.name, describe(error))

    # ----------------------------------------------------------------------- acking

    def _safe(self, msg: Msg) -> None:
        """Every event of ``msg`` is safe: ack it (from the ack task)."""
        self._to_ack.append(msg)
        self._ack_wanted.set()

    async def _ack_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ack_wanted.wait(), self.keepalive_secs / 2)
            self._ack_wanted.clear()
            batch, self._to_ack = self._to_ack, []
            for msg in batch:
                self._held.pop(id(msg), None)
                try:
                    await msg.ack()
                    self.acked += 1
                except nats.errors.MsgAlreadyAckdError:
                    pass
                except (nats.errors.Error, OSError) as error:
                    log.warning(
                        "input %s: ack failed (redelivered later): %s", self.name, describe(error)
                    )
            await self._keep_alive()

    async def _keep_alive(self) -> None:
        """``in_progress`` for messages that have waited ``in_progress_secs``."""
        now = time.monotonic()
        for held in list(self._held.values()):
            if now - held.since >= self.keepalive_secs:
                held.since = now
                with contextlib.suppress(nats.errors.Error, OSError):
                    await held.msg.in_progress()


# What a PayloadError's message starts with (or holds) -> the ``reason`` label of
# logstream_nats_terminated_total (a closed set: the message itself is logged).
_TERM_REASONS = (
    ("truncated", "truncated_frame"),
    ("corrupt", "corrupt_frame"),
    ("format version", "unknown_version"),
    ("unknown encoding", "unknown_encoding"),
    ("says encoding", "wrong_encoding"),
    ("not a logstream payload", "not_an_envelope"),
    ("empty payload", "not_an_envelope"),
    ("no event", "no_events"),
    ("decodes to more than", "too_big"),
    ("is over", "too_big"),
    ("after the", "trailing_bytes"),
)


def term_reason(error: str) -> str:
    """The reason label of a terminated message, from its decoding error."""
    for needle, reason in _TERM_REASONS:
        if needle in error:
            return reason
    return "bad_envelope"


def _where(msg: Msg) -> str:
    try:
        meta = msg.metadata
        return f"{meta.stream}#{meta.sequence.stream} ({msg.subject})"
    except (nats.errors.Error, ValueError, IndexError):
        return msg.subject
