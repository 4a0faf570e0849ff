"""The ``http`` input: JSON events POSTed over HTTP (Logstash's ``http`` input).

::

    inputs:
      - type: http
        listen: "127.0.0.1:8080"
        path: "/"                       # the one path that takes POSTs
        max_body_bytes: 10485760        # request body as sent (413 beyond)
        max_decompressed_bytes: 104857600  # gzip/deflate body once inflated (413 beyond)
        username: ingest                # optional basic auth; both or neither
        password: secret
        keep_headers: [x-request-id]    # copied into the event's "headers" field
        max_connections: 1000           # more clients are refused (counted)
        idle_timeout_secs: 75           # a keep-alive connection idle this long is closed

A request body is one of:

- a JSON object: one event;
- a JSON array: one event per element (an element that is not an object becomes
  a ``_jsonparsefailure`` event holding its JSON text);
- newline-delimited JSON (``Content-Type: application/x-ndjson``, or detected
  when the body is not one JSON document but has a line that is an object):
  one event per non-blank line, bad lines kept as ``_jsonparsefailure`` events
  as the tcp input does.

``Content-Encoding: gzip`` (or ``deflate``) bodies are inflated here, never by
aiohttp, so the inflated size is bounded by ``max_decompressed_bytes`` before
it is held in memory: a zip bomb costs at most that much.

Answers (the client is told what to do about each)::

    200 {"accepted": n}  events taken
    400                  not JSON at all / broken gzip / empty body
    401                  basic auth configured and missing or wrong
    405                  not POST (aiohttp's router)
    413                  body or inflated body too large
    415                  a Content-Encoding other than gzip, deflate, identity
    429                  ingest is full: nothing was taken, retry later
    503                  the input is stopping (ingest closed)

Flow control: a request is decoded, then ``ingest.offer``-ed whole; when ingest
is full it is refused with 429 and its events are counted as ``ingest_full``
drops (the client may resend them). Ingest overshoots its limit by one request
at most. Each refused request (400, 401, 413, 415, 429, 503) is counted in
``refused`` by status. Events without a ``host`` get the client's IP address.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import zlib
from typing import Final, Literal

import orjson
from aiohttp import web
from pydantic import Field, field_validator, model_validator

from logstream.buffer import BatchBuffer
from logstream.event import TAG_JSON_FAILURE, Batch, decode_json, failed_event, normalise
from logstream.metrics import DecodeIssue, UnitMetrics
from logstream.netaddr import parse_listen
from logstream.requestlog import request_error_logger
from logstream.tls import TlsServerSettings
from logstream.units import BuildContext, Input, InputConfig

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
_NDJSON_TYPES: Final = frozenset({"application/x-ndjson", "application/jsonlines"})
# wbits for zlib: 16 + 15 = gzip header, 15 = zlib header.
_WBITS: Final = {"gzip": 31, "x-gzip": 31, "deflate": 15}


class HttpInputConfig(InputConfig):
    """Receive JSON events POSTed over HTTP."""

    type: Literal["http"]
    listen: str = Field(
        default="127.0.0.1:8080",
        description="host:port to listen on; port 0 picks any free port.",
    )
    path: str = Field(default="/", description="The path that takes POSTs.")
    max_body_bytes: int = Field(
        default=10 * MIB, ge=1, description="Larger request bodies (as sent) get 413."
    )
    max_decompressed_bytes: int = Field(
        default=100 * MIB,
        ge=1,
        description="Compressed bodies that inflate beyond this get 413 (zip bombs).",
    )
    username: str | None = Field(default=None, description="Basic auth user (with password).")
    password: str | None = Field(default=None, description="Basic auth password (with username).")
    keep_headers: list[str] = Field(
        default_factory=list,
        description="Request headers copied into the event's `headers` field (lower-cased names).",
    )
    tls: TlsServerSettings | None = Field(
        default=None, description="Serve HTTPS with this certificate (see logstream.tls)."
    )
    max_connections: int = Field(
        default=1_000,
        ge=1,
        description="Clients beyond this many open connections are refused (and counted).",
    )
    idle_timeout_secs: float = Field(
        default=75.0, gt=0, description="Close a keep-alive connection idle this long."
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', value: {value!r}")
        return value

    @model_validator(mode="after")
    def _auth_pair(self) -> HttpInputConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError(
                "username and password go together, value: "
                f"username={self.username!r}, password={'set' if self.password else None}"
            )
        return self

    def build(self, name: str, ctx: BuildContext) -> HttpInput:
        return HttpInput(self, name, ctx.registry.unit(name, "input"))


class HttpInput(Input):
    """An aiohttp server on the event loop; one handler for POSTs to ``path``."""

    def __init__(self, config: HttpInputConfig, name: str, metrics: UnitMetrics) -> None:
        super().__init__(name, metrics)
        self.config = config
        self.host, self.port = parse_listen(config.listen)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._ingest: BatchBuffer | None = None
        # Requests refused, by HTTP status (logstream_requests_refused_total).
        self.refused = self.metrics.refused
        self._auth: bytes | None = None
        if config.username is not None and config.password is not None:
            token = base64.b64encode(f"{config.username}:{config.password}".encode())
            self._auth = b"Basic " + token
        self._keep = tuple(h.lower() for h in config.keep_headers)
        self._ssl = None if config.tls is None else config.tls.context(name)
        self._request_log = request_error_logger(f"http input {name}", lambda: self.metrics)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (the real port when ``listen`` asked for port 0)."""
        if self._address is None:
            raise RuntimeError(f"http input {self.name!r} has not started")
        return self._address

    async def start(self, ingest: BatchBuffer) -> None:
        self._ingest = ingest
        # client_max_size: aiohttp's own read limit, as a second guard.
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(self.config.path, self._handle)
        # auto_decompress off: we inflate with a bound (see _inflate).
        self._runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=self.config.idle_timeout_secs,
            # Malformed requests: counted, one log line per interval, no tracebacks.
            logger=self._request_log,
        )
        await self._runner.setup()
        handlers = self._runner.server
        if handlers is None:  # pragma: no cover - set by setup()
            raise RuntimeError("aiohttp runner has no server after setup")
        limit = self.config.max_connections

        def accept() -> asyncio.BaseProtocol:
            # aiohttp has no connection limit of its own: refuse past it here.
            if len(handlers.connections) >= limit:
                self.metrics.drop(1, "too_many_connections")
                return _Refused()
            return handlers()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            accept,
            self.host,
            self.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            ssl=self._ssl,
            backlog=1024,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (host, port)
        log.info("http input %s listening on %s:%d", self.name, *self.address)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            await runner.cleanup()
        except Exception:
            log.exception("http input %s: error while stopping", self.name)
        self._request_log.throttled.flush()  # the malformed requests not yet told

    # ----------------------------------------------------------------- requests

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.refused[status] += 1
        headers = {"WWW-Authenticate": 'Basic realm="logstream"'} if status == 401 else None
        return web.json_response({"error": reason}, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.Response:
        if self._auth is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, self._auth):
                return self._refuse(401, "authentication required")
        ingest = self._ingest
        if ingest is None or ingest.closed:
            return self._refuse(503, "input is stopping")
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            return self._refuse(
                413, f"body larger than max_body_bytes ({self.config.max_body_bytes})"
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(
                413, f"body larger than max_body_bytes ({self.config.max_body_bytes})"
            )
        self.metrics.bytes_in += len(body)

        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            wbits = _WBITS.get(encoding)
            if wbits is None:
                return self._refuse(415, f"unsupported Content-Encoding: {encoding!r}")
            inflated = self._inflate(body, wbits)
            if isinstance(inflated, web.Response):
                return inflated
            body = inflated

        ndjson = request.content_type in _NDJSON_TYPES
        batch = self._decode(body, ndjson)
        if batch is None:
            return self._refuse(400, "body is not JSON (an object, an array, or NDJSON)")

        host = request.remote or ""
        keep = self._keep
        headers = {name: request.headers[name] for name in keep if name in request.headers}
        for event in batch:
            if "host" not in event:
                event["host"] = host
            if headers and "headers" not in event:
                event["headers"] = dict(headers)

        if batch and not ingest.offer(batch):
            self.metrics.drop(len(batch), "ingest_full")
            return self._refuse(429, "pipeline is full; retry later")
        self.metrics.events_in += len(batch)
        if batch and ingest.durable:  # a disk queue: answer once the events are on disk
            await ingest.wait_safe(ingest.accepted)
        return web.json_response({"accepted": len(batch)})

    def _inflate(self, body: bytes, wbits: int) -> bytes | web.Response:
        """The inflated body, or the error answer. Never holds more than the bound + 1."""
        limit = self.config.max_decompressed_bytes
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
            if len(out) > limit or inflater.unconsumed_tail:
                return self._refuse(413, f"body inflates beyond max_decompressed_bytes ({limit})")
            out += inflater.flush()
        except zlib.error:
            return self._refuse(400, "body is not valid compressed data")
        if not inflater.eof:
            return self._refuse(400, "compressed body is truncated")
        if len(out) > limit:
            return self._refuse(413, f"body inflates beyond max_decompressed_bytes ({limit})")
        return out

    def _decode(self, body: bytes, ndjson: bool) -> Batch | None:
        """The events in ``body``; ``None`` when it is not JSON at all."""
        if ndjson:
            return self._lines(body, detected=False)
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            # Perhaps NDJSON sent without its content type: taken if a line is an object.
            if b"\n" not in body.strip():
                return None
            return self._lines(body, detected=True)
        if type(value) is dict:
            return [normalise(value)]
        if type(value) is list:
            batch: Batch = []
            for item in value:
                if type(item) is dict:
                    batch.append(normalise(item))
                else:
                    self.metrics.decode_issue("json_parse_failure")
                    batch.append(failed_event(orjson.dumps(item).decode(), TAG_JSON_FAILURE))
            return batch
        return None

    def _lines(self, body: bytes, *, detected: bool) -> Batch | None:
        """One event per non-blank line; ``None`` when ``detected`` and no line is clean."""
        batch: Batch = []
        issues: list[DecodeIssue] = []
        for line in body.split(b"\n"):
            if not line.strip():
                continue
            event, issue = decode_json(line.rstrip(b"\r"))
            batch.append(event)
            if issue is not None:
                issues.append(issue)  # type: ignore[arg-type]  # decode_json's reasons
        if detected and len(issues) == len(batch):
            return None
        for issue in issues:
            self.metrics.decode_issue(issue)
        return batch


class _Refused(asyncio.Protocol):
    """A connection over ``max_connections``: closed at once, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
