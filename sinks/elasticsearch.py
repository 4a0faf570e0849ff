"""The ``elasticsearch`` sink: batches indexed with the bulk API, retried until delivered.

Each batch becomes one or more ``_bulk`` requests (an ``index`` action line
and the event's JSON per event, NDJSON built with orjson), each body at most
``batch_max_bytes``. Elasticsearch is the system of record, so ``write``
retries what can succeed later until it does (or the sink is cancelled at
shutdown); that wait is the backpressure that fills the sink's buffer and,
with ``when_full: block``, pauses the inputs.

What happens to a request or an item, by what Elasticsearch answered:

====================================  =====================================================
connection error, timeout             the whole request retried (backoff)
400 or 413 to the whole request       split in halves, to find the event it cannot take;
                                      a request of one event: that event ``rejected``
any other non-2xx to the request      the whole request retried (backoff): 429 and 5xx
                                      pass, and 401/403/404 are settings that can be
                                      fixed without losing data (Logstash does the same)
200 with ``"errors": true``           items that failed with 429/5xx retried (backoff);
                                      other failed items ``rejected``, one log line per
                                      request (a dead-letter queue comes later)
====================================  =====================================================

Backoff is exponential from ``retry_initial_secs`` up to ``retry_max_secs``
with jitter; ``max_retries`` (default: none) bounds it, after which what is
left is dropped as ``sink_error``.

Delivery is at least once: a request whose answer is lost (the connection
drops or times out after Elasticsearch indexed it) is sent again, and its
events are then indexed twice (the documents have no ids of their own).

Why the transport and not ``client.bulk()``: the body is sent as the bytes
built here (no re-serialisation; the NDJSON serializer is replaced by a pass-
through), and with the plain ``application/x-ndjson``/``application/json``
media types. The 9.x client rewrites those to
``application/vnd.elasticsearch+json; compatible-with=9``, which Elasticsearch
8 refuses; plain types work with 7, 8 and 9. ``filter_path`` keeps the
response down to what is read here (status and error per item).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import orjson
from elastic_transport import NdjsonSerializer, OrjsonSerializer, TransportError
from elasticsearch import AsyncElasticsearch
from pydantic import Field, field_validator, model_validator

from logstream.event import Batch, Event
from logstream.template import compile_index_template
from logstream.units import BuildContext, Sink, SinkConfig

log = logging.getLogger(__name__)

_BULK_TARGET: Final = "/_bulk?filter_path=errors,items.*.error,items.*.status"
_NDJSON: Final = orjson.OPT_APPEND_NEWLINE
_ACTIONS_MAX: Final = 4096
# Whole-request statuses that say "some event in this body cannot be taken".
_SPLIT_REQUEST: Final = frozenset({400, 413})


class ElasticsearchSinkConfig(SinkConfig):
    """Index events into Elasticsearch with the bulk API.

    ``index`` is a template (``logstash-%{+YYYY.MM.dd}``, ``logs-%{type}``, see
    :mod:`logstream.template`); the result is lowercased and made a valid
    index name.
    """

    # TODO(flavor): `flavor: elasticsearch | opensearch` is a later issue; OpenSearch
    # takes the same bulk body, so it should only change the client and its checks.

    type: Literal["elasticsearch"]
    hosts: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:9200"],
        min_length=1,
        description="Node URLs with scheme and port; requests are spread over them.",
    )
    index: str = Field(default="logstash-%{+YYYY.MM.dd}", description="Index name template.")
    username: str | None = Field(default=None, description="Basic auth (with password).")
    password: str | None = None
    api_key: str | None = Field(default=None, description="API key: the encoded form, or `id:key`.")
    ca_file: Path | None = Field(default=None, description="PEM file of CAs to trust (https).")
    batch_max_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=1024,
        description="Bulk request body size at most; a larger batch is split.",
    )
    request_timeout_secs: float = Field(default=60.0, gt=0)
    max_retries: int | None = Field(
        default=None,
        ge=0,
        description="Retries of a request before giving up (sink_error); none: until delivered.",
    )
    retry_initial_secs: float = Field(default=1.0, gt=0, description="First backoff delay.")
    retry_max_secs: float = Field(default=64.0, gt=0, description="Longest backoff delay.")

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_host_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("hosts")
    @classmethod
    def _valid_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            parts = urlsplit(host)
            try:
                port = parts.port
            except ValueError:
                port = None
            if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
                raise ValueError(
                    f"{host!r} must be a URL with scheme, host and port, like http://127.0.0.1:9200"
                )
        return hosts

    @field_validator("username", "password", "api_key")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # "${ES_API_KEY:-}" in a config gives "" when the variable is not set.
        return value or None

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
        return self

    def build(self, name: str, ctx: BuildContext) -> ElasticsearchSink:
        return ElasticsearchSink(self, name, ctx)


class _BytesNdjsonSerializer(NdjsonSerializer):
    """Sends a body that is already NDJSON bytes as it is (the stock one copies it)."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes):
            return data
        return super().dumps(data)


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
        self._action_of = self._compile_actions(config.index)
        self._headers = {"content-type": "application/x-ndjson", "accept": "application/json"}
        if config.username is not None and config.password is not None:
            token = f"{config.username}:{config.password}".encode()
            self._headers["authorization"] = "Basic " + base64.b64encode(token).decode()
        elif config.api_key is not None:
            key = config.api_key
            if ":" in key:  # id:key -> the encoded form
                key = base64.b64encode(key.encode()).decode()
            self._headers["authorization"] = "ApiKey " + key
        self._client: AsyncElasticsearch | None = None
        self._random = random.Random()  # noqa: S311 - backoff jitter, not cryptography

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        config = self.config
        options: dict[str, Any] = {}
        if config.ca_file is not None:
            options["ca_certs"] = str(config.ca_file)
        # Auth is sent per request (self._headers); the client handles nodes and TLS.
        self._client = AsyncElasticsearch(
            list(config.hosts),
            request_timeout=config.request_timeout_secs,
            max_retries=0,
            retry_on_timeout=False,
            serializers={
                "application/json": OrjsonSerializer(),
                "application/x-ndjson": _BytesNdjsonSerializer(),
            },
            **options,
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # ----------------------------------------------------------------------- encoding

    def _compile_actions(self, index: str) -> Callable[[Event], bytes]:
        """A function giving the bulk action line (with its newline) of an event."""
        template = compile_index_template(index)
        if template.constant:
            action = _action_line(template.render({}))
            return lambda event: action
        index_of = template.render
        actions: dict[str, bytes] = {}

        def action_of(event: Event) -> bytes:
            name = index_of(event)
            line = actions.get(name)
            if line is None:
                if len(actions) >= _ACTIONS_MAX:
                    actions.clear()
                line = actions[name] = _action_line(name)
            return line

        return action_of

    def _encode(self, batch: Batch) -> list[list[bytes]]:
        """The batch as bulk request bodies: lists of [action, document, action, ...]
        lines, each list at most ``batch_max_bytes`` (unless one event alone is larger)."""
        limit = self.config.batch_max_bytes
        action_of = self._action_of
        dumps = orjson.dumps
        chunks: list[list[bytes]] = []
        parts: list[bytes] = []
        size = 0
        for event in batch:
            try:
                document = dumps(event, option=_NDJSON)
            except (TypeError, orjson.JSONEncodeError):
                try:
                    document = dumps(event, option=_NDJSON | orjson.OPT_NON_STR_KEYS)
                except (TypeError, orjson.JSONEncodeError):
                    self.metrics.drop(1, "encode_error")
                    continue
            action = action_of(event)
            item_size = len(action) + len(document)
            if size + item_size > limit and parts:
                chunks.append(parts)
                parts = []
                size = 0
            parts.append(action)
            parts.append(document)
            size += item_size
        if parts:
            chunks.append(parts)
        return chunks

    # ----------------------------------------------------------------------- delivery

    async def write(self, batch: Batch) -> None:
        for parts in self._encode(batch):
            await self._deliver(parts)

    async def _deliver(self, parts: list[bytes]) -> None:
        """Send one bulk body until every item is indexed or given up on."""
        attempt = 0
        while True:
            parts, reason = await self._attempt(parts)
            if not parts:
                return
            attempt += 1
            events = len(parts) // 2
            if self.config.max_retries is not None and attempt > self.config.max_retries:
                log.error(
                    "sink %s: giving up on %d events after %d retries: %s",
                    self.name,
                    events,
                    attempt - 1,
                    reason,
                )
                self.metrics.drop(events, "sink_error")
                return
            delay = self._backoff(attempt)
            self.metrics.retries += 1
            log.warning(
                "sink %s: %s; retrying %d events in %.2fs (retry %d)",
                self.name,
                reason,
                events,
                delay,
                attempt,
            )
            await asyncio.sleep(delay)

    async def _attempt(self, parts: list[bytes]) -> tuple[list[bytes], str]:
        """Send ``parts`` once and settle what can be settled.

        Returns the parts still to send (empty when done) and why they failed.
        """
        client = self._client
        if client is None:
            raise RuntimeError(f"sink {self.name}: write() before start()")
        body = b"".join(parts)
        events = len(parts) // 2
        try:
            response = await client.transport.perform_request(
                "POST",
                _BULK_TARGET,
                body=body,
                headers=self._headers,
                request_timeout=self.config.request_timeout_secs,
                max_retries=0,
                retry_on_status=(),
                retry_on_timeout=False,
            )
        except TransportError as error:
            return parts, f"{type(error).__name__}: {error.message}"
        status = response.meta.status
        answer = response.body
        if 200 <= status < 300:
            if not isinstance(answer, dict):
                return parts, f"HTTP {status} with an unexpected answer: {_error_text(answer)}"
            self.metrics.bytes_out += len(body)
            return self._settle(parts, answer)
        reason = f"HTTP {status} {_error_text(answer)}"
        if status not in _SPLIT_REQUEST:
            if status in (401, 403):
                reason += " (check the sink's credentials)"
            return parts, reason
        if events > 1:
            log.info(
                "sink %s: %s for a request of %d events (%d bytes); splitting it",
                self.name,
                reason,
                events,
                len(body),
            )
            half = events // 2 * 2  # whole [action, document] pairs
            await self._deliver(parts[:half])
            await self._deliver(parts[half:])
            return [], ""
        index = orjson.loads(parts[0])["index"]["_index"]
        log.error("sink %s: an event for index %s rejected: %s", self.name, index, reason)
        self.metrics.drop(1, "rejected")
        return [], ""

    def _settle(self, parts: list[bytes], answer: dict[str, Any]) -> tuple[list[bytes], str]:
        """Count a bulk response's items; return the parts of those to retry, and why."""
        events = len(parts) // 2
        if answer.get("errors") is False:
            self.metrics.events_out += events
            return [], ""
        items = answer.get("items")
        if not isinstance(items, list) or len(items) != events:
            got = len(items) if isinstance(items, list) else 0
            log.error(
                "sink %s: bulk response has %d items for %d events; counting them as failed",
                self.name,
                got,
                events,
            )
            self.metrics.drop(events, "sink_error")
            return [], ""
        retry: list[bytes] = []
        retry_kinds: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        first_rejection = ""
        delivered = 0
        for position, entry in enumerate(items):
            item = next(iter(entry.values()), None) if isinstance(entry, dict) else None
            if not isinstance(item, dict):
                item = {}
            status = item.get("status", 0)
            if 200 <= status < 300:
                delivered += 1
                continue
            error = item.get("error")
            kind = f"{status} {error.get('type', '?') if isinstance(error, dict) else error}"
            if status == 429 or status >= 500:
                retry += parts[2 * position : 2 * position + 2]
                retry_kinds[kind] += 1
            else:
                rejected[kind] += 1
                if not first_rejection:
                    index = orjson.loads(parts[2 * position])["index"]["_index"]
                    first_rejection = f"index {index}: {_error_text({'error': error})}"
        self.metrics.events_out += delivered
        if rejected:
            count = rejected.total()
            self.metrics.drop(count, "rejected")
            log.error(
                "sink %s: Elasticsearch rejected %d of %d events (%s); first: %s",
                self.name,
                count,
                events,
                _summary(rejected),
                first_rejection,
            )
        return retry, f"{retry_kinds.total()} items refused for now ({_summary(retry_kinds)})"

    def _backoff(self, attempt: int) -> float:
        """Exponential delay for retry ``attempt`` (1, 2, ...), capped, with jitter in
        its upper half so that many sinks do not retry in step."""
        config = self.config
        growth = 2.0 ** min(attempt - 1, 60)  # bounded: a float overflows past 2**1023
        ceiling = min(config.retry_max_secs, config.retry_initial_secs * growth)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)


def _action_line(index: str) -> bytes:
    return orjson.dumps({"index": {"_index": index}}, option=_NDJSON)


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
