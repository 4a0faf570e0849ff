"""The monitor: its source protocol, basic auth, TLS and masking, through real sockets."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from logstream.config import ConfigError, parse_config
from logstream.metrics import Registry, UnitMetrics
from logstream.monitor import Monitor, MonitorSettings
from tests.support.tls import Certificates, make_certificates

PASSWORD = "s3cret-Pa55"  # noqa: S105 - a test credential


class FixedSource:
    """A MetricsSource that is not a pipeline (as a supervisor's would be)."""

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.registry = Registry()

    def monitor_metrics(self) -> UnitMetrics:
        return self.registry.unit("monitor", "pipeline")

    def exposition(self) -> bytes:
        return b"# TYPE x counter\nx_total 7.0\n"

    def health(self) -> tuple[dict[str, Any], bool]:
        body = {"status": "ok" if self.healthy else "down",
                "workers": [{"url": f"http://u:{PASSWORD}@h:1"}]}  # fmt: skip
        return body, self.healthy


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("monitor-tls"))


class Served:
    """A Monitor running on its own event loop in a background thread."""

    def __init__(self, monitor: Monitor) -> None:
        import threading

        self.monitor = monitor
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(monitor.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.monitor.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Served] = []

    def start(settings: MonitorSettings, source: Any = None, pages: Any = ()) -> Monitor:
        served = Served(Monitor(source or FixedSource(), settings, pages))
        started.append(served)
        return served.monitor

    yield start
    for served in started:
        served.close()


def get(url: str, user: str | None = None, password: str | None = None,
        context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    request = urllib.request.Request(url)  # noqa: S310 - a local test URL
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:  # noqa: S310
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_serves_any_source_and_masks_health(serve: Any) -> None:
    monitor = serve(MonitorSettings(listen="127.0.0.1:0"))
    status, _, body = get(f"{monitor.url}/metrics")
    assert (status, body) == (200, b"# TYPE x counter\nx_total 7.0\n")
    status, _, body = get(f"{monitor.url}/health")
    assert status == 200
    assert PASSWORD.encode() not in body
    assert b'"status":"ok"' in body and b'"version"' in body and b"u:***@h:1" in body


def test_unhealthy_source_answers_503(serve: Any) -> None:
    monitor = serve(MonitorSettings(listen="127.0.0.1:0"), FixedSource(healthy=False))
    status, _, body = get(f"{monitor.url}/health")
    assert status == 503 and b'"status":"down"' in body


def test_basic_auth_guards_every_route(serve: Any) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="the page")

    settings = MonitorSettings(listen="127.0.0.1:0", username="ops", password=PASSWORD)
    monitor = serve(settings, pages=[web.get("/tail", page)])
    for path in ("/metrics", "/health", "/tail", "/nowhere"):
        status, headers, _ = get(f"{monitor.url}{path}")
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith('Basic realm="logstream"')
        assert get(f"{monitor.url}{path}", "ops", "wrong")[0] == 401
        assert get(f"{monitor.url}{path}", "opz", PASSWORD)[0] == 401
    assert get(f"{monitor.url}/metrics", "ops", PASSWORD)[0] == 200
    assert get(f"{monitor.url}/tail", "ops", PASSWORD)[2] == b"the page"
    assert monitor.refused == 12


def test_malformed_authorization_headers_get_401(serve: Any) -> None:
    settings = MonitorSettings(listen="127.0.0.1:0", username="ops", password=PASSWORD)
    monitor = serve(settings)
    no_colon = "Basic " + base64.b64encode(b"nocolon").decode()
    for header in ("Basic", "Basic !!!", "Bearer abc", no_colon):
        request = urllib.request.Request(  # noqa: S310 - a local test URL
            f"{monitor.url}/metrics", headers={"Authorization": header}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310
        assert refused.value.code == 401


def test_tls_serves_https_and_refuses_plain_http(serve: Any, certs: Certificates) -> None:
    settings = MonitorSettings(
        listen="127.0.0.1:0", username="ops", password=PASSWORD,
        tls={"cert_file": certs.cert, "key_file": certs.key},  # type: ignore[arg-type]
    )  # fmt: skip
    monitor = serve(settings)
    assert monitor.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(certs.ca))
    status, _, body = get(f"{monitor.url}/metrics", "ops", PASSWORD, context)
    assert (status, body[:8]) == (200, b"# TYPE x")
    assert get(f"{monitor.url}/metrics", context=context)[0] == 401
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(monitor.url.replace("https://", "http://") + "/metrics", "ops", PASSWORD)


def test_aiohttp_client_with_auth(serve: Any) -> None:
    settings = MonitorSettings(listen="127.0.0.1:0", username="ops", password=PASSWORD)
    monitor = serve(settings)

    async def fetch() -> tuple[int, int]:
        async with ClientSession() as http:
            async with http.get(f"{monitor.url}/health") as refused:
                pass
            token = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
            auth = {"Authorization": f"Basic {token}"}
            async with http.get(f"{monitor.url}/health", headers=auth) as ok:
                return refused.status, ok.status

    assert asyncio.run(fetch()) == (401, 200)


def test_settings_errors_name_the_key_and_never_the_password(tmp_path: Path) -> None:
    base: dict[str, Any] = {"inputs": [{"type": "udp", "listen": "127.0.0.1:0"}],
                            "sinks": [{"type": "stdout"}]}  # fmt: skip
    with pytest.raises(ConfigError) as error:
        parse_config({**base, "monitor": {"password": PASSWORD}})
    assert "username and password go together" in str(error.value)
    assert PASSWORD not in str(error.value)
    with pytest.raises(ConfigError) as error:
        parse_config(
            {
                **base,
                "monitor": {
                    "username": "ops",
                    "password": PASSWORD,
                    "tls": {
                        "cert_file": str(tmp_path / "none.pem"),
                        "key_file": str(tmp_path / "none.key"),
                    },
                },
            }
        )
    assert "none.pem" in str(error.value) and "monitor" in str(error.value)
    assert PASSWORD not in str(error.value)
    config = parse_config({**base, "monitor": {"username": "ops", "password": PASSWORD}})
    assert PASSWORD not in repr(config) and PASSWORD not in str(config.monitor)


def test_banner_masks_the_monitor_password(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    from logstream.banner import banner

    caplog.set_level(logging.DEBUG)
    base: dict[str, Any] = {"inputs": [{"type": "udp", "listen": "127.0.0.1:0"}],
                            "sinks": [{"type": "stdout"}],
                            "monitor": {"listen": "127.0.0.1:0", "username": "ops",
                                        "password": PASSWORD}}  # fmt: skip
    config = parse_config(base)
    monitor = serve(config.monitor)
    out = io.StringIO()
    banner(config, monitor, {}, out)
    text = out.getvalue()
    assert PASSWORD not in text and PASSWORD not in caplog.text
    assert f"curl -u 'ops:***' {monitor.url}/metrics" in text
