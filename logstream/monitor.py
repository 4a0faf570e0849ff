"""The monitoring endpoint: ``/metrics`` (Prometheus text) and ``/health``.

Served by aiohttp on the pipeline's own event loop, by default on
127.0.0.1:9600, the port Logstash uses for its monitoring API.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from logstream import __version__
from logstream.netaddr import parse_listen
from logstream.pipeline import Pipeline
from logstream.requestlog import request_error_logger
from logstream.secrets import mask_text


class Monitor:
    def __init__(self, pipeline: Pipeline, listen: str) -> None:
        self.pipeline = pipeline
        self.host, self.port = parse_listen(listen)
        self._runner: web.AppRunner | None = None
        self._started = time.time()
        # Malformed requests: counted on a "monitor" unit, one log line per interval.
        self._request_log = request_error_logger(
            "monitor", lambda: pipeline.registry.unit("monitor", "pipeline")
        )

    async def start(self) -> None:
        """Bind and serve. Raises ``OSError`` if the address is taken."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, logger=self._request_log)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port nowhere else
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.pipeline.registry.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        running = self.pipeline.running
        body = {
            "status": "ok" if running else "stopping",
            "version": __version__,
            "uptime_secs": round(time.time() - self._started, 3),
            "units": [m.snapshot() for m in self.pipeline.registry.units()],
        }
        return web.Response(
            body=mask_text(orjson.dumps(body).decode()).encode(),  # no URL password, ever
            status=200 if running else 503,
            content_type="application/json",
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._request_log.throttled.flush()
