"""The monitoring endpoint: ``/metrics`` (Prometheus text), ``/health`` and extra pages.

Served by aiohttp on the caller's event loop, by default on 127.0.0.1:9600, the
port Logstash uses for its monitoring API. What it serves comes from a
:class:`MetricsSource`: :class:`PipelineSource` for one pipeline in this
process; a supervisor of worker processes passes its own source (metrics summed
over the workers) to the same :class:`Monitor`.

Optional HTTP basic auth (``username``/``password``) and TLS (``tls``) cover
every route, as Logstash's ``api.auth`` and ``api.ssl`` settings do::

    monitor:
      listen: "0.0.0.0:9600"
      username: ops
      password: ${MONITOR_PASSWORD}
      tls: {cert_file: /etc/logstream/monitor.pem, key_file: /etc/logstream/monitor.key}
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from logstream import __version__
from logstream.metrics import UnitMetrics
from logstream.netaddr import parse_listen
from logstream.pipeline import Pipeline
from logstream.requestlog import request_error_logger
from logstream.secrets import mask_text
from logstream.tls import TlsServerSettings

log = logging.getLogger("logstream.monitor")

REALM = "logstream"


class MonitorSettings(BaseModel):
    """The ``monitor:`` section of a config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    listen: str = Field(
        default="127.0.0.1:9600", description="Where /metrics, /health and /tail are served."
    )
    username: str | None = Field(
        default=None, min_length=1, description="Basic auth user (with password) for every route."
    )
    password: SecretStr | None = Field(default=None, description="Basic auth password.")
    tls: TlsServerSettings | None = Field(
        default=None, description="Serve HTTPS with this certificate and key."
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("password")
    @classmethod
    def _non_empty_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave both username and password out for no auth)")
        return value

    @model_validator(mode="after")
    def _auth_pair(self) -> MonitorSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (set both or neither)")
        if self.tls is not None:
            self.ssl_context()  # a missing or mismatched file is a config error, named here
        return self

    @property
    def auth(self) -> bool:
        return self.username is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        try:
            return self.tls.context("monitor")
        except ValueError as error:
            raise ValueError(str(error).removeprefix("input ")) from None


class MetricsSource(Protocol):
    """What a :class:`Monitor` serves."""

    def exposition(self) -> bytes:
        """The Prometheus text for ``/metrics``."""
        ...

    def health(self) -> tuple[dict[str, Any], bool]:
        """The ``/health`` JSON body (without ``version`` and ``uptime_secs``, which the
        monitor adds) and whether the service is healthy (200) or not (503)."""
        ...

    def monitor_metrics(self) -> UnitMetrics:
        """Where the monitor counts the requests it refused as malformed."""
        ...


class PipelineSource:
    """A :class:`MetricsSource` over one :class:`~logstream.pipeline.Pipeline` in this process."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def exposition(self) -> bytes:
        return self.pipeline.registry.exposition()

    def health(self) -> tuple[dict[str, Any], bool]:
        running = self.pipeline.running
        body = {
            "status": "ok" if running else "stopping",
            "units": [m.snapshot() for m in self.pipeline.registry.units()],
        }
        return body, running

    def monitor_metrics(self) -> UnitMetrics:
        return self.pipeline.registry.unit("monitor", "pipeline")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _credentials(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


class Monitor:
    """Serves a :class:`MetricsSource` over HTTP(S); ``pages`` are extra aiohttp routes
    (the ``/tail`` page), behind the same auth."""

    def __init__(
        self,
        source: MetricsSource,
        settings: MonitorSettings,
        pages: Iterable[web.AbstractRouteDef] = (),
        *,
        reuse_port: bool = False,
    ) -> None:
        self.source = source
        # Workers of one run all serve the monitor address (each shows the host's sums).
        self.reuse_port = reuse_port
        self.settings = settings
        self.pages = list(pages)
        self.host, self.port = parse_listen(settings.listen)
        self._runner: web.AppRunner | None = None
        self._started = time.time()
        self.refused = 0  # requests answered 401
        self._user = (settings.username or "").encode()
        self._password = settings.password.get_secret_value().encode() if settings.password else b""
        # Malformed requests: counted on a "monitor" unit, one log line per interval.
        self._request_log = request_error_logger("monitor", source.monitor_metrics)

    async def start(self) -> None:
        """Bind and serve. Raises ``OSError`` if the address is taken."""
        middlewares = [self._auth] if self.settings.auth else []
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.add_routes(self.pages)
        self._runner = web.AppRunner(app, access_log=None, logger=self._request_log)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.host,
            self.port,
            ssl_context=self.settings.ssl_context(),
            reuse_port=self.reuse_port or None,
        )
        await site.start()
        server = site._server  # aiohttp exposes the bound port nowhere else
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """The base URL, without credentials."""
        return f"{self.settings.scheme}://{self.host}:{self.port}"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = _credentials(request.headers.get("Authorization", ""))
        # Both compared in constant time, and both always compared: the answer's
        # timing says nothing about which part was wrong or how much of it matched.
        user_ok = hmac.compare_digest(given[0] if given else b"", self._user)
        password_ok = hmac.compare_digest(given[1] if given else b"", self._password)
        if given is not None and user_ok and password_ok:
            return await handler(request)
        self.refused += 1
        return web.Response(
            status=401,
            text="401: credentials required\n",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.source.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        health, healthy = self.source.health()
        body = {
            "status": health.get("status", "ok" if healthy else "unhealthy"),
            "version": __version__,
            "uptime_secs": round(time.time() - self._started, 3),
            **{key: value for key, value in health.items() if key != "status"},
        }
        return web.Response(
            body=mask_text(orjson.dumps(body).decode()).encode(),  # no URL password, ever
            status=200 if healthy else 503,
            content_type="application/json",
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._request_log.throttled.flush()
