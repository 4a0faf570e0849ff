"""The ``/tail`` page: a live tail of MQTT log topics in the browser, served by the monitor.

The page (``tail.html`` and the bundle ``dist/tail.js``, built from ``src/`` by
``npm run build``, which ``scripts/bootstrap`` runs) connects straight to the
broker's MQTT-over-WebSockets listener: the broker, not logstream, fans the
stream out to browsers. What it needs to know comes from ``/tail/config.json``:
for each MQTT sink its ``websockets_url``, a default topic filter, its payload
encoding, its broker user name (never a password: the page asks for it) and
its byte caps (for the chart's cap lines).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from logstream.sinks.mqtt import MqttSinkConfig

if TYPE_CHECKING:
    from logstream.config import Config

WEB_DIR = Path(__file__).parent
DIST_DIR = WEB_DIR / "dist"
PAGE = WEB_DIR / "tail.html"
ASSETS = {"tail.js": "application/javascript", "tail.css": "text/css"}
NOT_BUILT = (
    "The /tail page's bundle is not built ({missing} is missing). Build it from the "
    "checkout with `npm ci && npm run build` (scripts/bootstrap does this).\n"
)


def default_topic_filter(topic_template: str) -> str:
    """The filter that follows a sink's topics: the template's fixed prefix and ``#``."""
    root = topic_template.split("{", 1)[0].rstrip("/")
    return f"{root}/#" if root else "#"


def sink_entry(name: str, sink: MqttSinkConfig) -> dict[str, Any]:
    """What the page needs about one MQTT sink (no secret: it goes to every browser)."""
    limits = sink.rate_limit
    caps: dict[str, Any] | None = None
    if limits is not None and limits.any_caps:
        caps = {
            # In order, first match wins; a filter without a byte cap means none.
            "topics": [[topic, c.bytes_per_sec] for topic, c in limits.topics.items()],
            "topic_bytes_per_sec": limits.topic_bytes_per_sec,
            "total_bytes_per_sec": limits.total_bytes_per_sec,
        }
    return {
        "name": name,
        "websockets_url": sink.websockets_url,
        "topic_filter": default_topic_filter(sink.topic),
        "encoding": sink.encoding,
        "username": sink.username,
        "caps": caps,
    }


def tail_config(config: Config) -> dict[str, Any]:
    """The body of ``/tail/config.json`` for ``config``."""
    names = config.unit_names()
    sinks = [sink for sink in config.sinks if isinstance(sink, MqttSinkConfig)]
    # Sinks the page can reach first.
    sinks.sort(key=lambda sink: sink.websockets_url is None)
    return {"sinks": [sink_entry(names[id(sink)], sink) for sink in sinks]}


def page_url(base: str) -> str:
    return f"{base}/tail"


def tail_routes(page_config: dict[str, Any]) -> list[web.RouteDef]:
    """The aiohttp routes of the page, for :class:`~logstream.monitor.Monitor`'s ``pages``."""

    async def page(request: web.Request) -> web.StreamResponse:
        missing = [name for name in ASSETS if not (DIST_DIR / name).is_file()]
        if missing:
            text = NOT_BUILT.format(missing=DIST_DIR / missing[0])
            return web.Response(status=503, text=text)
        return web.FileResponse(PAGE, headers=_NO_CACHE)

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = DIST_DIR / name
        if name not in ASSETS or not path.is_file():
            raise web.HTTPNotFound(text=NOT_BUILT.format(missing=path) if name in ASSETS else "")
        return web.FileResponse(path, headers={"Content-Type": ASSETS[name], **_NO_CACHE})

    async def config_json(request: web.Request) -> web.Response:
        return web.json_response(page_config, headers=_NO_CACHE)

    async def slash(request: web.Request) -> web.Response:
        raise web.HTTPFound("/tail")

    return [
        web.get("/tail", page),
        web.get("/tail/", slash),
        web.get("/tail/config.json", config_json),
        web.get("/tail/{name}", asset),
    ]


_NO_CACHE = {"Cache-Control": "no-cache"}


def tail_page(config: Config) -> list[web.RouteDef]:
    """The routes of the /tail page for a running ``config``."""
    return tail_routes(tail_config(config))
