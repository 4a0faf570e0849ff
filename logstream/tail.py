"""``logstream tail``: follow MQTT log topics like ``tail -f``, in any payload encoding.

::

    logstream tail --url mqtt://broker:1883 --level WARNING 'logs/#'

Without ``--url`` it follows the local broker of a running ``logstream run``:
``run`` writes that broker's URL into ``<state_dir>/mqtt.url`` (removed on stop),
with ``state_dir`` from ``-c CONFIG`` (default ``config/local.yaml`` when it
exists, else ``.logstream``).

Subscribes to the topic filters, decodes every payload (``json``,
``ndjson``, ``lz4``, ``zstd``; :mod:`logstream.payload`) and prints one line
per event: time, level (coloured on a terminal), host, message, and how many
events it stands for when it was sampled. Accounting records are printed as
``--`` summaries of what was suppressed. ``--json`` prints each event as one
JSON line instead (for ``jq``). A payload that cannot be decoded is reported
on stderr and skipped. The connection is re-established after an outage
(paho's back-off, 1 to 10 s); subscriptions are renewed on every connect.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from logstream.event import Event
from logstream.payload import PayloadError, decode, is_accounting
from logstream.severity import Severity, from_text

# In the state dir while `logstream run` has a local broker: that broker's mqtt:// URL.
MQTT_URL_FILE = "mqtt.url"
DEFAULT_STATE_DIR = Path(".logstream")
FALLBACK_URL = "mqtt://127.0.0.1:1883"


def state_dir_of(config_path: Path | None) -> Path:
    """The ``state_dir`` a config names (``.logstream`` when it names none or is absent)."""
    if config_path is None or not config_path.is_file():
        return DEFAULT_STATE_DIR
    from logstream.config import ConfigError, read_yaml, substitute_env

    try:
        data = substitute_env(read_yaml(config_path), dict(os.environ))
    except ConfigError:
        return DEFAULT_STATE_DIR
    value = data.get("state_dir") if isinstance(data, dict) else None
    return Path(value) if isinstance(value, str) and value else DEFAULT_STATE_DIR


def default_url(config_path: Path | None, err: TextIO) -> str:
    """The URL ``logstream tail`` uses without ``--url``: the running local broker's,
    from ``<state_dir>/mqtt.url``, else ``mqtt://127.0.0.1:1883`` (saying so on ``err``)."""
    url_file = state_dir_of(config_path) / MQTT_URL_FILE
    try:
        url = url_file.read_text(encoding="utf-8").strip()
    except OSError:
        url = ""
    if url:
        print(f"logstream tail: the local broker of logstream run, from {url_file}", file=err)
        return url
    print(
        f"logstream tail: no running logstream with a local broker ({url_file} does not "
        f"exist); trying {FALLBACK_URL}, give --url for another broker",
        file=err,
    )
    return FALLBACK_URL


# ANSI colours per severity (a terminal only).
_COLOURS = {
    Severity.TRACE: "\033[2m",
    Severity.DEBUG: "\033[2m",
    Severity.INFO: "",
    Severity.NOTICE: "\033[36m",
    Severity.WARNING: "\033[33m",
    Severity.ERROR: "\033[31m",
    Severity.CRITICAL: "\033[1;31m",
}
_ACCOUNTING_COLOUR = "\033[35m"
_RESET = "\033[0m"


@dataclass(frozen=True)
class TailOptions:
    topics: list[str]
    url: str = "mqtt://127.0.0.1:1883"
    level: Severity | None = None
    json: bool = False
    colour: bool = False
    count: int | None = None  # stop after this many events
    protocol: str = "5"
    qos: int = 1
    username: str | None = None
    password: str | None = None


class Printer:
    """Formats decoded events and summaries onto ``out`` (no MQTT here, for tests)."""

    def __init__(self, options: TailOptions, out: TextIO, err: TextIO) -> None:
        self.options = options
        self.out = out
        self.err = err
        self.events = 0
        self.errors = 0

    def message(
        self, topic: str, payload: bytes, content_type: str | None, properties: dict[str, str]
    ) -> None:
        """One MQTT message: decode it and print what it holds."""
        try:
            decoded = decode(payload, content_type=content_type, properties=properties)
        except PayloadError as error:
            self.errors += 1
            print(f"logstream tail: {topic}: cannot decode: {error}", file=self.err, flush=True)
            return
        for problem in decoded.errors:
            self.errors += 1
            print(f"logstream tail: {topic}: {problem}", file=self.err)
        lines = []
        minimum = self.options.level
        for event in decoded.events:
            if is_accounting(event):
                lines.append(self._summary(topic, event))
                continue
            if minimum is not None and _severity(event) < minimum:
                continue
            lines.append(self._line(event))
            self.events += 1
            if self.options.count is not None and self.events >= self.options.count:
                break
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    @property
    def done(self) -> bool:
        return self.options.count is not None and self.events >= self.options.count

    def _line(self, event: Event) -> str:
        if self.options.json:
            return orjson.dumps(event).decode()
        severity = _severity(event)
        level = str(event.get("level") or severity.name)
        rate = event.get("sample_rate")
        parts = [
            str(event.get("@timestamp", "-")),
            f"{level:<8}",
            str(event.get("host") or "-"),
            _text(event.get("message")),
        ]
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate != 1:
            parts.append(f"(sampled 1/{rate:g})")
        line = " ".join(parts)
        colour = _COLOURS.get(severity, "") if self.options.colour else ""
        return f"{colour}{line}{_RESET}" if colour else line

    def _summary(self, topic: str, event: Event) -> str:
        if self.options.json:
            return orjson.dumps(event).decode()
        info = event.get("logstream") if isinstance(event.get("logstream"), dict) else {}
        where = info.get("topic", topic) if isinstance(info, dict) else topic
        rates = info.get("sample_rates") if isinstance(info, dict) else None
        line = f"-- {where}: {event.get('message', 'events suppressed')}"
        if rates:
            line += " sample rates: " + ", ".join(f"{k} 1/{v}" for k, v in rates.items())
        return f"{_ACCOUNTING_COLOUR}{line}{_RESET}" if self.options.colour else line


def _severity(event: Event) -> Severity:
    return from_text(event.get("level")) or Severity.INFO


def _text(value: object) -> str:
    if isinstance(value, str):
        return value.replace("\n", "\\n")
    return "-" if value is None else orjson.dumps(value).decode()


def tail(options: TailOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Follow the topics until ``count`` events were printed or Ctrl-C. Returns an exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parts = urlsplit(options.url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        print(
            f"logstream tail: --url must be mqtt://host[:port] or mqtts://..., value: "
            f"{options.url!r}",
            file=err,
        )
        return 2
    username, password = options.username, options.password
    if username is None and parts.username:
        username, password = unquote(parts.username), unquote(parts.password or "")
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    where = f"{parts.scheme}://{parts.hostname}:{port}"
    printer = Printer(options, out, err)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"logstream-tail-{secrets.token_hex(4)}",
        protocol=MQTTProtocolVersion.MQTTv5
        if options.protocol == "5"
        else MQTTProtocolVersion.MQTTv311,
        reconnect_on_failure=True,
    )
    if parts.scheme == "mqtts":
        client.tls_set()
    if username is not None:
        client.username_pw_set(username, password)
    client.reconnect_delay_set(1, 10)
    state = {"connected_once": False, "failing": False}

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            print(f"logstream tail: {where} refused the connection: {reason}", file=err, flush=True)
            return
        state["failing"] = False
        client.subscribe([(topic, options.qos) for topic in options.topics])

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        again = " again" if state["connected_once"] else ""
        state["connected_once"] = True
        print(
            f"logstream tail: subscribed{again} to {', '.join(options.topics)} at {where}",
            file=err,
            flush=True,
        )

    def on_disconnect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if not printer.done:
            print(
                f"logstream tail: connection to {where} lost ({reason}); reconnecting",
                file=err,
                flush=True,
            )

    def on_connect_fail(client: mqtt.Client, userdata: Any) -> None:
        if not state["failing"]:
            state["failing"] = True
            print(f"logstream tail: cannot connect to {where}; retrying", file=err, flush=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if printer.done:
            return
        content_type, properties = _properties(message.properties)
        printer.message(message.topic, bytes(message.payload), content_type, properties)
        if printer.done:
            client.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.on_connect_fail = on_connect_fail
    client.on_message = on_message
    try:
        client.connect_async(parts.hostname, port, keepalive=30)
        client.loop_forever(retry_first_connection=True)
    except KeyboardInterrupt:
        client.disconnect()
        return 130
    except BrokenPipeError:  # `logstream tail ... | head`
        # Python's final flush of stdout would fail again: point it at /dev/null.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
        return 0
    return 0


def _properties(properties: Properties | None) -> tuple[str | None, dict[str, str]]:
    if properties is None:
        return None, {}
    content_type = getattr(properties, "ContentType", None)
    user = getattr(properties, "UserProperty", None) or []
    return content_type, {str(key): str(value) for key, value in user}


def colour_wanted(choice: str, out: TextIO) -> bool:
    """``--color auto``: on a terminal unless NO_COLOR is set."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return out.isatty() and not os.environ.get("NO_COLOR")
