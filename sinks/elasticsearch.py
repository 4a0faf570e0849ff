"""The ``elasticsearch`` sink: bulk indexing that loses nothing.

Elasticsearch is the system of record, so this sink never gives up on an
event that can still succeed, and never silently drops one that cannot::

    batch -> BulkEncoder (action + document per event, ids, data streams)
          -> [disk spool]  (optional: survives restarts and kill -9)
          -> bulk requests (batch_max_bytes each, gzip optional)
          -> answers sorted: delivered / retry later / dead letter

What happens to a request or an item, by what Elasticsearch answered:

====================================  =====================================================
connection error, timeout             the whole request retried (backoff)
400 or 413 to the whole request       split in halves, to find the event it cannot take;
                                      a request of one event: that event dead-lettered
any other non-2xx to the request      the whole request retried (backoff): 429 and 5xx
                                      pass, and 401/403/404 are settings that can be
                                      fixed without losing data (Logstash does the same)
200, item 2xx                         delivered
200, item 409 on ``create``           delivered before (the same id): counted as
                                      ``already_indexed`` and delivered
200, item 429 or 5xx                  that item retried (backoff), the others not
200, item other 4xx                   dead-lettered (``dead_letter``), or dropped as
                                      ``rejected`` when the dead-letter queue is off/full
====================================  =====================================================

Backoff is exponential from ``retry_initial_secs`` up to ``retry_max_secs``
(64 s) with jitter; ``max_retries`` (default: none) bounds it, after which
what is left is dropped as ``sink_error``.

Documents get deterministic ids (:mod:`logstream.bulk`) and ``create``
actions, so a request sent twice (its answer lost), a spool replayed after a
crash or a window re-sent by Filebeat creates each document once.

The spool (``spool.enabled``): ``write`` appends the encoded items to disk
(:mod:`logstream.spool`) and returns; a drain task with ``max_in_flight``
requests sends them and acknowledges what Elasticsearch took. While
Elasticsearch is down the spool grows (up to ``spool.max_bytes``: then
``block`` the pipeline or ``drop_oldest``, counted); when it is back the
backlog drains at the server's pace, in full-size requests. The pipeline
treats the spooled sink's events as safe once appended, so Beats ACKs and
file checkpoints wait for the disk, not for Elasticsearch.

Why the transport and not ``client.bulk()``: the body is sent as the bytes
built here (no re-serialisation), with the plain ``application/x-ndjson`` and
``application/json`` media types. The 9.x client rewrites those to
``application/vnd.elasticsearch+json; compatible-with=9``, which
Elasticsearch 8 refuses and OpenSearch answers with 406; plain types work
with Elasticsearch 7, 8 and 9 and OpenSearch 1 to 3. ``filter_path`` keeps
the response down to what is read here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import logging
import random
import ssl
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from logstream.bulk import (
    BulkEncoder,
    DataStreamSettings,
    EncodeError,
    action_line,
    action_target,
)
from logstream.dlq import DeadLetter, DeadLetterQueue
from logstream.esadmin import ServerInfo, TemplateSettings, install_template, server_info
from logstream.event import Batch
from logstream.spool import Spool, SpoolBatch, SpoolClosed, SpoolSettings
from logstream.template import compile_index_template
from logstream.units import BuildContext, Sink, SinkConfig

if TYPE_CHECKING:
    from elasticsearch import AsyncElasticsearch

log = logging.getLogger(__name__)

_BULK_TARGET: Final = "/_bulk?filter_path=errors,items.*.error,items.*.status"
# Whole-request statuses that say "some event in this body cannot be taken".
_SPLIT_REQUEST: Final = frozenset({400, 413})
MIB: Final = 1024 * 1024
# How long close() lets spooled requests in flight finish before leaving them to the
# next start.
_CLOSE_GRACE_SECS: Final = 5.0


class _Closing(Exception):
    """A spooled delivery stops retrying because the sink is closing."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpoolConfig(_Strict):
    """The sink's disk spool (see :mod:`logstream.spool`)."""

    enabled: bool = False
    path: Path | None = Field(
        default=None, description="Directory of the spool (default: <state_dir>/spool/<sink>)."
    )
    max_bytes: int = Field(default=1024 * MIB, ge=MIB, description="Disk the spool may use.")
    segment_bytes: int = Field(default=16 * MIB, ge=4096, description="Size of one segment.")
    fsync: Literal["always", "interval", "never"] = Field(
        default="interval",
        description="always: before write returns; interval: every fsync_interval_secs; "
        "never: leave it to the OS (a kill -9 loses nothing either way, a power cut may).",
    )
    fsync_interval_secs: float = Field(default=1.0, gt=0)
    when_full: Literal["block", "drop_oldest"] = Field(
        default="block", description="At max_bytes: block the pipeline, or drop the oldest."
    )

    @model_validator(mode="after")
    def _segments_fit(self) -> SpoolConfig:
        if self.segment_bytes * 2 > self.max_bytes:
            raise ValueError(
                f"spool.max_bytes ({self.max_bytes}) must hold at least two segments of "
                f"segment_bytes ({self.segment_bytes})"
            )
        return self

    def settings(self) -> SpoolSettings:
        """The :class:`~logstream.spool.Spool` settings these options give."""
        return SpoolSettings(
            max_bytes=self.max_bytes,
            segment_bytes=self.segment_bytes,
            fsync=self.fsync,
            fsync_interval_secs=self.fsync_interval_secs,
            when_full=self.when_full,
        )


class DeadLetterConfig(_Strict):
    """Where events Elasticsearch refuses for good are kept (see :mod:`logstream.dlq`)."""

    enabled: bool = True
    path: Path | None = Field(
        default=None,
        description="NDJSON file (default: <state_dir>/dead-letters/<sink>.ndjson).",
    )
    max_bytes: int = Field(default=1024 * MIB, ge=1024, description="The file's size at most.")


class ElasticsearchSinkConfig(SinkConfig):
    """Index events into Elasticsearch or OpenSearch with the bulk API.

    ``index`` is a template (``logstash-%{+YYYY.MM.dd}``, ``logs-%{type}``, see
    :mod:`logstream.template`); the result is lowercased and made a valid
    index name. ``data_stream`` replaces it with ``logs-<dataset>-<namespace>``.
    """

    type: Literal["elasticsearch"]
    hosts: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:9200"],
        min_length=1,
        description="Node URLs with scheme and port; requests are spread over them.",
    )
    flavor: Literal["auto", "elasticsearch", "opensearch"] = Field(
        default="auto", description="The server kind; auto: read from its answer to GET /."
    )
    index: str = Field(default="logstash-%{+YYYY.MM.dd}", description="Index name template.")
    data_stream: DataStreamSettings | None = Field(
        default=None, description="Write to data streams <type>-<dataset>-<namespace> instead."
    )
    document_id: str = Field(
        default="auto",
        description="auto: a hash of the event and its source position; none: let the "
        "server pick (a replay may duplicate); or a template such as %{[event][id]}.",
    )
    template: TemplateSettings | None = Field(
        default=None, description="Install an index template at start (mappings for our fields)."
    )
    username: str | None = Field(default=None, description="Basic auth (with password).")
    # Secrets: shown as ********** by repr, str, model_dump and errors; read only to
    # build the authorization header.
    password: SecretStr | None = None
    api_key: SecretStr | None = Field(
        default=None, description="API key: the encoded form, or `id:key`."
    )
    ca_file: Path | None = Field(default=None, description="PEM file of CAs to trust (https).")
    compression: Literal["none", "gzip"] = Field(
        default="none", description="gzip: compress request bodies (less network, more CPU)."
    )
    batch_max_bytes: int = Field(
        default=5 * MIB,
        ge=1024,
        description="Bulk request body size at most (before compression); larger is split.",
    )
    request_timeout_secs: float = Field(default=60.0, gt=0)
    max_retries: int | None = Field(
        default=None,
        ge=0,
        description="Retries of a request before giving up (sink_error); none: until delivered.",
    )
    retry_initial_secs: float = Field(default=1.0, gt=0, description="First backoff delay.")
    retry_max_secs: float = Field(default=64.0, gt=0, description="Longest backoff delay.")
    max_in_flight: int = Field(
        default=2, ge=1, le=64, description="Bulk requests at once when draining the spool."
    )
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    dead_letters: DeadLetterConfig = Field(default_factory=DeadLetterConfig)

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_host_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("hosts")
    @classmethod
    def _valid_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not _is_node_url(host):
                raise ValueError(
                    f"{host!r} must be a URL with scheme, host and port, like http://127.0.0.1:9200"
                )
        return hosts

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("username", "password", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # "${ES_API_KEY:-}" in a config gives "" when the variable is not set.
        return None if value == "" else value

    @field_validator("index")
    @classmethod
    def _valid_index(cls, value: str) -> str:
        compile_index_template(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ElasticsearchSinkConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both or neither")
        if self.username is not None and self.api_key is not None:
            raise ValueError("set either username/password or api_key, not both")
        if self.retry_max_secs < self.retry_initial_secs:
            raise ValueError(
                f"retry_max_secs ({self.retry_max_secs}) must be at least "
                f"retry_initial_secs ({self.retry_initial_secs})"
            )
        if self.data_stream is not None and "index" in self.model_fields_set:
            raise ValueError("set either index or data_stream: a data stream names its own index")
        return self

    def build(self, name: str, ctx: BuildContext) -> ElasticsearchSink:
        return ElasticsearchSink(self, name, ctx)


def _is_node_url(url: str) -> bool:
    """True for ``http(s)://host:port`` (a port the client can connect to)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port is not None


def _serializers() -> dict[str, Any]:
    """The client's serializers: orjson for JSON, and NDJSON bodies that are already
    bytes sent as they are (the stock serializer copies them). The client library is
    imported here, when a sink starts: configs are checked without it (``check``, the
    supervisor of worker processes)."""
    from elastic_transport import NdjsonSerializer, OrjsonSerializer

    class BytesNdjsonSerializer(NdjsonSerializer):
        def dumps(self, data: Any) -> bytes:
            if isinstance(data, bytes):
                return data
            return bytes(super().dumps(data))

    return {"application/json": OrjsonSerializer(), "application/x-ndjson": BytesNdjsonSerializer()}


class ElasticsearchSink(Sink):
    def __init__(self, config: ElasticsearchSinkConfig, name: str, ctx: BuildContext) -> None:
        super().__init__(name, ctx.registry.unit(name, "sink"))
        self.config = config
        if config.ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(config.ca_file))
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"sink {name}: ca_file {str(config.ca_file)!r} cannot be used: {error}"
                ) from None
        self.encoder = BulkEncoder(config.index, config.document_id, config.data_stream)
        # Headers of the three kinds of request: GET, JSON bodies, bulk (NDJSON) bodies.
        self._headers = {"accept": "application/json"}
        if config.username is not None and config.password is not None:
            token = f"{config.username}:{config.password.get_secret_value()}".encode()
            self._headers["authorization"] = "Basic " + base64.b64encode(token).decode()
        elif config.api_key is not None:
            key = config.api_key.get_secret_value()
            if ":" in key:  # id:key -> the encoded form
                key = base64.b64encode(key.encode()).decode()
            self._headers["authorization"] = "ApiKey " + key
        self._json_headers = {**self._headers, "content-type": "application/json"}
        self._bulk_headers = {**self._headers, "content-type": "application/x-ndjson"}
        if config.compression == "gzip":
            self._bulk_headers["content-encoding"] = "gzip"
        self._client: AsyncElasticsearch | None = None
        self._random = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self.info: ServerInfo | None = None
        self._template_due = config.template is not None
        # Dead letters: a file, opened on first use.
        self.dead_letters: DeadLetterQueue | None = None
        if config.dead_letters.enabled:
            path = config.dead_letters.path or ctx.state_dir / "dead-letters" / f"{name}.ndjson"
            self.dead_letters = DeadLetterQueue(path, name, config.dead_letters.max_bytes)
        # The spool, opened at start; the pipeline writes straight to it.
        self.spool: Spool | None = None
        self.spool_path: Path | None = None
        self.spooled = config.spool.enabled
        if self.spooled:
            self.spool_path = config.spool.path or ctx.state_dir / "spool" / name
        self._drain_task: asyncio.Task[None] | None = None
        self._spool_dropped = 0
        self._closing = False  # close() began: spooled deliveries stop retrying

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        config = self.config
        options: dict[str, Any] = {}
        if config.ca_file is not None:
            options["ca_certs"] = str(config.ca_file)
        from elasticsearch import AsyncElasticsearch

        # Auth is sent per request (self._headers); the client handles nodes and TLS.
        self._client = AsyncElasticsearch(
            list(config.hosts),
            request_timeout=config.request_timeout_secs,
            max_retries=0,
            retry_on_timeout=False,
            serializers=_serializers(),
            **options,
        )
        await self._check_at_start()
        if self.spooled:
            self._open_spool()

    async def _check_at_start(self) -> None:
        """Ask the server who it is; fail only on refused credentials (a setting).
        A server that is down is retried by the writes."""
        try:
            self.info = await self.check()
        except ConnectionError as error:
            log.warning("sink %s: %s; events wait until it answers", self.name, error)
            return
        except PermissionError as error:
            raise ValueError(f"sink {self.name}: {error}") from None
        log.info("sink %s: connected to %s", self.name, self.info.describe())
        await self._install_template()

    async def check(self) -> ServerInfo:
        """``GET /`` of the first answering host: ``ConnectionError`` if none answers,
        ``PermissionError`` for refused credentials."""
        info = await server_info(self._request)
        if self.config.flavor != "auto" and info.flavor != self.config.flavor:
            log.warning(
                "sink %s: flavor %s configured, but the server says it is %s",
                self.name,
                self.config.flavor,
                info.describe(),
            )
        return info

    async def _install_template(self) -> None:
        settings = self.config.template
        if settings is None or not self._template_due:
            return
        try:
            message = await install_template(
                self._request, settings, self.config.index, self.config.data_stream
            )
        except ConnectionError as error:
            log.warning("sink %s: template not installed yet: %s", self.name, error)
            return
        self._template_due = False
        log.info("sink %s: %s", self.name, message)

    def _open_spool(self) -> None:
        spool_config = self.config.spool
        path = self.spool_path
        if path is None:  # pragma: no cover - set with spooled
            raise RuntimeError("spool path unset")
        try:
            spool = Spool.open(
                path,
                spool_config.settings(),
            )
        except OSError as error:
            raise ValueError(
                f"sink {self.name}: spool {str(path)!r} cannot be used: {error}"
            ) from None
        self.spool = spool
        report = spool.recovery
        # A torn tail (a write cut by a crash) is one damaged record too.
        torn = 1 if report.torn_tail_bytes else 0
        self.metrics.spool_corrupt_records += report.corrupt_records + torn
        self.metrics.spool_events = lambda: spool.pending_entries
        self.metrics.spool_bytes = lambda: spool.disk_bytes
        if report.entries or report.corrupt_records or report.torn_tail_bytes:
            log.warning(
                "sink %s: spool %s: %d events from before to deliver; %d damaged records "
                "(%d bytes) and a torn tail of %d bytes skipped; cursor %s",
                self.name,
                path,
                report.entries,
                report.corrupt_records,
                report.corrupt_bytes,
                report.torn_tail_bytes,
                report.cursor,
            )
        self._drain_task = asyncio.create_task(self._drain(spool), name=f"drain:{self.name}")

    async def close(self) -> None:
        """Stop draining (requests in flight finish, up to request_timeout_secs); what
        is left in the spool is delivered at the next start."""
        self._closing = True
        task, self._drain_task = self._drain_task, None
        spool, self.spool = self.spool, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if spool is not None:
            self._count_spool_drops(spool)
            left = spool.pending_entries
            await spool.close()
            if left:
                log.info("sink %s: %d events stay in the spool for the next start", self.name, left)
        if self.dead_letters is not None:
            self.dead_letters.close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # ----------------------------------------------------------------------- writing

    def encode(self, batch: Batch) -> list[bytes]:
        """Each event as one bulk item (action and document lines); events that cannot
        be encoded are counted as ``encode_error``."""
        encode = self.encoder.encode
        items: list[bytes] = []
        for event in batch:
            try:
                action, document = encode(event)
            except EncodeError:
                self.metrics.drop(1, "encode_error")
                continue
            items.append(action + document)
        return items

    async def write(self, batch: Batch) -> None:
        items = self.encode(batch)
        spool = self.spool
        if spool is None:
            for chunk in self._chunks(items):
                await self._deliver(chunk)
            return
        try:
            await spool.append(items)
        except SpoolClosed:
            self.metrics.drop(len(items), "shutdown")
            return
        self._count_spool_drops(spool)

    def _count_spool_drops(self, spool: Spool) -> None:
        dropped = spool.dropped_entries - self._spool_dropped
        if dropped:
            self._spool_dropped = spool.dropped_entries
            self.metrics.drop(dropped, "spool_full")
            log.warning(
                "sink %s: spool full (max_bytes %d): %d oldest events dropped",
                self.name,
                self.config.spool.max_bytes,
                dropped,
            )

    def _chunks(self, items: list[bytes]) -> list[list[bytes]]:
        """``items`` cut into request bodies of at most ``batch_max_bytes`` (unless one
        item alone is larger)."""
        limit = self.config.batch_max_bytes
        chunks: list[list[bytes]] = []
        chunk: list[bytes] = []
        size = 0
        for item in items:
            if size + len(item) > limit and chunk:
                chunks.append(chunk)
                chunk = []
                size = 0
            chunk.append(item)
            size += len(item)
        if chunk:
            chunks.append(chunk)
        return chunks

    async def _drain(self, spool: Spool) -> None:
        """Read the spool and deliver it, ``max_in_flight`` requests at once."""
        slots = asyncio.Semaphore(self.config.max_in_flight)
        running: set[asyncio.Task[None]] = set()
        max_events = self.config.batch_max_events
        try:
            while True:
                await slots.acquire()
                try:
                    batch = await spool.read(max_events)
                except BaseException:
                    slots.release()
                    raise
                if batch is None:  # closed
                    slots.release()
                    return
                task = asyncio.create_task(self._deliver_spooled(spool, batch, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            # Requests in flight get a moment to finish; the entries of the others are
            # not acknowledged and are sent again at the next start (same ids).
            if running:
                _, pending = await asyncio.wait(running, timeout=_CLOSE_GRACE_SECS)
                for task in pending:
                    task.cancel()

    async def _deliver_spooled(
        self, spool: Spool, batch: SpoolBatch, slots: asyncio.Semaphore
    ) -> None:
        try:
            if self._template_due:
                await self._install_template()
            for chunk in self._chunks(batch.entries):
                await self._deliver(chunk)
            spool.ack(batch)  # after close: ignored, read again at the next start
        except _Closing:
            pass  # not acknowledged: the spool keeps these for the next start
        except Exception:
            count = len(batch.entries)
            log.exception("sink %s: delivering %d spooled events failed", self.name, count)
            self.metrics.drop(count, "sink_error")
            spool.ack(batch)
        finally:
            slots.release()

    # ----------------------------------------------------------------------- delivery

    async def _deliver(self, items: list[bytes]) -> None:
        """Send one bulk body until every item is delivered or given up on."""
        attempt = 0
        while True:
            items, reason = await self._attempt(items)
            if not items:
                return
            attempt += 1
            if self.config.max_retries is not None and attempt > self.config.max_retries:
                log.error(
                    "sink %s: giving up on %d events after %d retries: %s",
                    self.name,
                    len(items),
                    attempt - 1,
                    reason,
                )
                self.metrics.drop(len(items), "sink_error")
                return
            if self._closing and self.spooled:
                raise _Closing  # the spool keeps them; no point retrying while closing
            delay = self._backoff(attempt)
            self.metrics.retries += 1
            log.warning(
                "sink %s: %s; retrying %d events in %.2fs (retry %d)",
                self.name,
                reason,
                len(items),
                delay,
                attempt,
            )
            await asyncio.sleep(delay)

    async def _request(
        self, method: str, path: str, body: bytes | None = None, *, ndjson: bool = False
    ) -> tuple[int, Any]:
        """One request with this sink's auth and media types (no retries, no
        ``compatible-with``); ``TransportError`` when no answer came."""
        client = self._client
        if client is None:
            raise RuntimeError(f"sink {self.name}: used before start()")
        if body is None:
            headers = self._headers
        elif ndjson:
            headers = self._bulk_headers
            if self.config.compression == "gzip":
                body = gzip.compress(body, compresslevel=1)
        else:
            headers = self._json_headers
        response = await client.transport.perform_request(
            method,
            path,
            body=body,
            headers=headers,
            request_timeout=self.config.request_timeout_secs,
            max_retries=0,
            retry_on_status=(),
            retry_on_timeout=False,
        )
        return response.meta.status, response.body

    async def _attempt(self, items: list[bytes]) -> tuple[list[bytes], str]:
        """Send ``items`` once and settle what can be settled.

        Returns the items still to send (empty when done) and why they failed.
        """
        from elastic_transport import TransportError

        body = b"".join(items)
        try:
            status, answer = await self._request("POST", _BULK_TARGET, body, ndjson=True)
        except TransportError as error:
            return items, f"{type(error).__name__}: {error.message}"
        if 200 <= status < 300:
            if not isinstance(answer, dict):
                return items, f"HTTP {status} with an unexpected answer: {_error_text(answer)}"
            self.metrics.bytes_out += len(body)
            return self._settle(items, answer)
        reason = f"HTTP {status} {_error_text(answer)}"
        if status not in _SPLIT_REQUEST:
            if status in (401, 403):
                reason += " (check the sink's credentials)"
            return items, reason
        if len(items) > 1:
            log.info(
                "sink %s: %s for a request of %d events (%d bytes); splitting it",
                self.name,
                reason,
                len(items),
                len(body),
            )
            half = len(items) // 2
            await self._deliver(items[:half])
            await self._deliver(items[half:])
            return [], ""
        refusal = answer.get("error") if isinstance(answer, dict) else answer
        self._dead_letter(items[0], status, refusal)
        return [], ""

    def _settle(self, items: list[bytes], answer: dict[str, Any]) -> tuple[list[bytes], str]:
        """Count a bulk response's items; return those to retry, and why.

        An answer is trusted only when it has one result per item sent; any other
        answer is retried whole (the document ids make that safe).
        """
        results = answer.get("items")
        complete = isinstance(results, list) and len(results) == len(items)
        if answer.get("errors") is False and complete:
            self.metrics.events_out += len(items)
            return [], ""
        if not isinstance(results, list) or len(results) != len(items):
            got = len(results) if isinstance(results, list) else 0
            log.error(
                "sink %s: bulk response has %d items for %d events; retrying them all",
                self.name,
                got,
                len(items),
            )
            return items, "a bulk response that does not match the request"
        retry: list[bytes] = []
        retry_kinds: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        delivered = 0
        already = 0
        for item, entry in zip(items, results, strict=True):
            result = next(iter(entry.values()), None) if isinstance(entry, dict) else None
            if not isinstance(result, dict):
                result = {}
            status = result.get("status", 0)
            if 200 <= status < 300:
                delivered += 1
                continue
            if status == 409 and item.startswith(b'{"create"'):
                already += 1
                continue
            error = result.get("error")
            kind = f"{status} {error.get('type', '?') if isinstance(error, dict) else error}"
            if status == 429 or status >= 500:
                retry.append(item)
                retry_kinds[kind] += 1
            else:
                refused[kind] += 1
                self._dead_letter(item, status, error, log_it=refused.total() == 1)
        self.metrics.events_out += delivered + already
        self.metrics.already_indexed += already
        if refused:
            log.error(
                "sink %s: Elasticsearch refused %d of %d events (%s)",
                self.name,
                refused.total(),
                len(items),
                _summary(refused),
            )
        return retry, f"{retry_kinds.total()} items refused for now ({_summary(retry_kinds)})"

    def _dead_letter(self, item: bytes, status: int, error: Any, *, log_it: bool = True) -> None:
        """Keep an item Elasticsearch refused for good in the dead-letter file."""
        newline = item.index(b"\n")
        index, doc_id, op_type = action_target(item[: newline + 1])
        if log_it:
            log.error(
                "sink %s: an event for index %s refused (HTTP %d): %s",
                self.name,
                index,
                status,
                _error_text({"error": error}),
            )
        queue = self.dead_letters
        letter = DeadLetter(index, doc_id, op_type, status, error, item[newline + 1 : -1])
        try:
            kept = queue is not None and queue.add(letter)
        except OSError as failure:
            log.error("sink %s: dead-letter file: %s", self.name, failure)
            kept = False
        self.metrics.drop(1, "dead_letter" if kept else "rejected")

    def _backoff(self, attempt: int) -> float:
        """Exponential delay for retry ``attempt`` (1, 2, ...), capped, with jitter in
        its upper half so that many sinks do not retry in step."""
        config = self.config
        growth = 2.0 ** min(attempt - 1, 60)  # bounded: a float overflows past 2**1023
        ceiling = min(config.retry_max_secs, config.retry_initial_secs * growth)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    # ----------------------------------------------------------------------- replay

    async def replay(self, letters: list[DeadLetter]) -> None:
        """Send dead letters again, to their index with their id (``create``)."""
        items = []
        for letter in letters:
            op_type = "create" if letter.id is not None or letter.op_type == "create" else "index"
            action = action_line(op_type, letter.index, letter.id)
            items.append(action + letter.document + b"\n")
        for chunk in self._chunks(items):
            await self._deliver(chunk)


def _summary(kinds: Counter[str]) -> str:
    return ", ".join(f"{kind} x{count}" for kind, count in kinds.most_common())


def _error_text(answer: Any) -> str:
    """The ``type: reason`` of an Elasticsearch error body (or the body, shortened)."""
    error = answer.get("error") if isinstance(answer, dict) else answer
    if isinstance(error, dict):
        text = f"{error.get('type', '?')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" (caused by {cause.get('type', '?')}: {cause['reason']})"
        return text
    text = str(error)
    return text if len(text) <= 300 else text[:300] + "..."
