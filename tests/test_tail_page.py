"""The /tail page in a real browser: Debian's Chromium, headless, driven by playwright.

A real `logstream run` starts its local mosquitto (plain and websockets
listeners on free ports) and its monitor (with basic auth); the MQTT sink
publishes lz4 batches; the page, served by the monitor, connects to the
broker over MQTT-over-WebSockets. Events sent to the tcp input must all show
up as rows; the level filter hides INFO; pausing stops new rows; a flooded,
capped topic shows "suppressed" markers.

Screenshots go to ``$LOGSTREAM_TEST_ARTIFACTS`` (default ``test-artifacts/``);
with ``LOGSTREAM_DOCS_SCREENSHOT=1`` the README's ``docs/tail-page.png`` is
written as well.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.publish as publish
import pytest

from logstream.web import DIST_DIR
from tests.support.running import RunningLogstream, logstream_process

__all__ = ["logstream_process"]  # the fixture, imported for this module

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "page-Pa55-word"  # noqa: S105 - a test credential
ARTIFACTS = Path(os.environ.get("LOGSTREAM_TEST_ARTIFACTS", REPO / "test-artifacts"))

if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; scripts/bootstrap "
        "does it): the /tail page cannot be tested in a browser here",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")


@pytest.fixture
def browser() -> Iterator[Any]:
    assert (DIST_DIR / "tail.js").is_file(), (
        f"{DIST_DIR / 'tail.js'} is not built: run scripts/bootstrap (npm ci && npm run build)"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def config() -> dict[str, Any]:
    return {
        "sinks": [{
            "type": "mqtt", "url": "local", "topic": "logs/{host}/{level}", "encoding": "lz4",
            "payload_max_delay_secs": 0.05,
            # DEBUG topics are capped (and their flood sampled, with accounting records);
            # the others are not, so every one of their events must arrive.
            "rate_limit": {"topics": {"logs/+/DEBUG": {"bytes_per_sec": 1500}},
                           "burst_secs": 1, "accounting_interval_secs": 1},
        }],
        "monitor": {"username": "ops", "password": PASSWORD},
    }  # fmt: skip


def events(prefix: str, count: int) -> list[dict[str, Any]]:
    levels = ["INFO", "WARNING", "ERROR"]
    hosts = ["web-1", "db-2"]
    return [
        {"message": f"{prefix} {n}", "level": levels[n % 3], "host": hosts[n % 2], "n": n}
        for n in range(count)
    ]


def tail_url(running: RunningLogstream) -> str:
    match = re.search(r"Tail page: (\S+)", running.banner())
    assert match, running.banner()
    return match.group(1)


def row_messages(page: Any, level: str | None = None) -> list[str]:
    selector = "#rows .row:not(.marker)" + (f"[data-level={level}]" if level else "")
    return [str(text) for text in page.locator(f"{selector} .message").all_inner_texts()]


def wait_rows(page: Any, count: int, timeout_ms: int = 15_000) -> None:
    page.wait_for_function(
        f"document.querySelectorAll('#rows .row:not(.marker)').length >= {count}",
        timeout=timeout_ms,
    )


def test_tail_page_shows_filters_and_pauses(
    logstream_process: Callable[..., RunningLogstream], browser: Any
) -> None:
    running = logstream_process(config())
    url = tail_url(running)
    assert PASSWORD not in running.banner()
    context = browser.new_context(
        http_credentials={"username": "ops", "password": PASSWORD},
        viewport={"width": 1280, "height": 800},
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#status[data-state=connected]", timeout=15_000)
    assert "ws://127.0.0.1:" in page.locator("#broker").input_value()

    # Every line appears (lz4 batches through the real broker's websockets listener).
    sent = events("first batch", 60)
    running.send(sent)
    wait_rows(page, 60)
    assert sorted(row_messages(page)) == sorted(event["message"] for event in sent)
    assert page.locator("#dropped").inner_text() == "0"
    assert page.locator("#errors").inner_text() == "0"

    # The level filter hides INFO (and keeps the rest).
    page.select_option("#level", "WARNING")
    assert row_messages(page, "INFO") == []
    assert len(row_messages(page)) == 40
    assert {*row_messages(page, "WARNING"), *row_messages(page, "ERROR")} == {
        event["message"] for event in sent if event["level"] != "INFO"
    }
    page.select_option("#level", "TRACE")
    assert len(row_messages(page)) == 60

    # Pausing stops new rows; what arrived meanwhile shows on resume.
    page.click("#pause")
    running.send(events("while paused", 30))
    page.wait_for_function("window.logstreamTail.received >= 90", timeout=15_000)
    time.sleep(0.3)  # several render ticks
    assert len(row_messages(page)) == 60
    assert "30 arrived while paused" in page.locator("#paused-count").inner_text()
    page.click("#pause")
    wait_rows(page, 90)

    # A flood on a capped topic: sampled, and the page shows "N suppressed" markers.
    flood = [{"message": f"cache miss for session {n:04d}, fetching from the store",
              "level": "DEBUG", "host": "web-1", "padding": "x" * 200}
             for n in range(400)]  # fmt: skip
    for start in range(0, len(flood), 50):
        running.send(flood[start : start + 50])
        time.sleep(0.25)
    page.wait_for_selector("#rows .row.marker", timeout=15_000)
    marker = page.locator("#rows .row.marker .message").first.inner_text()
    assert re.match(r"\d+ suppressed", marker), marker
    assert int(page.locator("#suppressed").inner_text()) > 0
    time.sleep(2.5)  # a few chart points
    assert errors == []

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tail-page.png"))
    if os.environ.get("LOGSTREAM_DOCS_SCREENSHOT") == "1":
        shutil.copy(ARTIFACTS / "tail-page.png", REPO / "docs" / "tail-page.png")
    context.close()


def test_tail_page_refuses_without_credentials(
    logstream_process: Callable[..., RunningLogstream], browser: Any
) -> None:
    running = logstream_process(config())
    url = tail_url(running)
    context = browser.new_context()
    for path in ("", "/config.json", "/tail.js"):
        answer = context.request.get(url + path)
        assert answer.status == 401, path
        assert answer.headers["www-authenticate"].startswith("Basic")
        assert PASSWORD not in answer.text()
    with pytest.raises(sync_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
        context.new_page().goto(url)  # the browser's answer to a 401 it has no login for
    context.close()


def test_tail_page_decodes_every_encoding(
    logstream_process: Callable[..., RunningLogstream], browser: Any
) -> None:
    encodings = ["json", "ndjson", "lz4", "zstd"]
    running = logstream_process({"sinks": [
        {"type": "mqtt", "url": "local", "topic": f"{encoding}/{{host}}", "encoding": encoding,
         "payload_max_delay_secs": 0.05}
        for encoding in encodings
    ]})  # fmt: skip
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(tail_url(running) + "?topic=%23")  # every sink's topics
    page.wait_for_selector("#status[data-state=connected]", timeout=15_000)
    sent = [{"message": f"every encoding {n} ünïcødé", "host": "h", "level": "WARNING",
             "nested": {"n": n}} for n in range(25)]  # fmt: skip
    running.send(sent)
    wait_rows(page, 100)
    seen = page.evaluate(
        "window.logstreamTail.items.map(item => [item.topic.split('/')[0], item.message])"
    )
    for encoding in encodings:
        messages = sorted(message for topic, message in seen if topic == encoding)
        assert messages == sorted(event["message"] for event in sent), encoding
    assert page.locator("#errors").inner_text() == "0"

    # Bad payloads are counted and shown, and the page goes on.
    broker = urlsplit((Path(running.config["state_dir"]) / "mqtt.url").read_text().strip())
    publish.multiple(
        [("lz4/bad", b"\x04\x22\x4d\x18\x64\x40truncated"), ("json/bad", b"not a payload")],
        hostname=broker.hostname, port=broker.port,
    )  # fmt: skip
    page.wait_for_function("window.logstreamTail.decodeErrors >= 2", timeout=15_000)
    assert "bad:" in page.locator("#error").inner_text()
    running.send([{"message": "after the bad ones", "host": "h", "level": "ERROR"}])
    wait_rows(page, 104)
    assert errors == []


def test_tail_page_buffer_is_bounded_and_counts_what_it_dropped(
    logstream_process: Callable[..., RunningLogstream], browser: Any
) -> None:
    running = logstream_process(config())
    context = browser.new_context(http_credentials={"username": "ops", "password": PASSWORD})
    page = context.new_page()
    page.goto(tail_url(running) + "?max_rows=25")
    page.wait_for_selector("#status[data-state=connected]", timeout=15_000)
    sent = events("bounded", 60)
    running.send(sent)
    page.wait_for_function("window.logstreamTail.received >= 60", timeout=15_000)
    page.wait_for_function("document.querySelectorAll('#rows .row').length == 25")
    assert page.locator("#dropped").inner_text() == "35"
    assert page.locator("#buffered").inner_text() == "25"
    kept = page.evaluate("window.logstreamTail.items.map(item => item.message)")
    assert set(kept) <= {event["message"] for event in sent} and len(kept) == 25
    context.close()
