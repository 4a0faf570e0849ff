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

Several brokers (``--url A --url B``, a sink with ``urls: [A, B]``): tail
follows each at once (one paho client per broker) and prints every message
once, whichever broker delivers it first. Numbered messages (a producer id
and a per-topic sequence number, docs/mqtt-payload.md) are de-duplicated by
(producer, topic, seq) in a bounded window (:class:`Dedupe`); a number that
no broker delivered within ``gap_wait_secs`` is reported on stderr as a gap.
When a broker dies the others go on; it is followed again when it is back.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import SplitResult, unquote, urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from logstream.event import Event
from logstream.local.servers import MQTT_URL_FILE
from logstream.payload import PROP_PRODUCER, PROP_SEQ, PayloadError, decode, is_accounting
from logstream.severity import Severity, from_text

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
    # Several brokers (each followed at once); empty: ``url`` alone.
    urls: tuple[str, ...] = ()
    gap_wait_secs: float = 2.0  # a missing number is a gap once this long overdue

    @property
    def brokers(self) -> tuple[str, ...]:
        return self.urls or (self.url,)


@dataclass(frozen=True)
class Gap:
    """Messages of one producer and topic that no broker delivered."""

    producer: str
    topic: str
    first: int
    last: int

    def describe(self) -> str:
        count = self.last - self.first + 1
        numbers = f"seq {self.first}" if count == 1 else f"seq {self.first}-{self.last}"
        noun = "message" if count == 1 else "messages"
        return f"gap: {count} {noun} missing on {self.topic} from {self.producer} ({numbers})"


class _Stream:
    """What one (producer, topic) delivered: the highest number, and the numbers below
    it not seen yet (number -> when it was first missed; inf once reported)."""

    __slots__ = ("high", "missing")

    def __init__(self, high: int) -> None:
        self.high = high
        self.missing: dict[int, float] = {}


class Dedupe:
    """Drops messages already seen, by (producer, topic, seq), in a bounded window.

    Per (producer, topic) it keeps the highest number seen and the numbers below
    it that have not arrived yet (at most ``window``); a number at or below the
    highest that is not among them was seen already (or is too old to tell), and
    is dropped. At most ``max_streams`` (producer, topic) pairs are kept, the
    least recently used forgotten first. The first message of a pair starts it
    (a subscriber that joins mid-stream reports no gap). Thread-safe callers
    only (tail holds a lock).
    """

    def __init__(
        self,
        window: int = 10_000,
        max_streams: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_streams = max_streams
        self.clock = clock
        self.streams: OrderedDict[tuple[str, str], _Stream] = OrderedDict()
        self.duplicates = 0
        self.late = 0  # arrived after being reported as a gap
        self._overflow: list[Gap] = []  # gaps too big or too old to wait for

    def admit(self, producer: str, topic: str, seq: int) -> bool:
        """True the first time (producer, topic, seq) is seen, False for a repeat."""
        key = (producer, topic)
        stream = self.streams.get(key)
        if stream is None:
            self.streams[key] = _Stream(seq)
            if len(self.streams) > self.max_streams:
                self.streams.popitem(last=False)
            return True
        self.streams.move_to_end(key)
        if seq > stream.high:
            now = self.clock()
            first = stream.high + 1
            if seq - first > self.window:  # more missing than the window holds: say so now
                self._overflow.append(Gap(producer, topic, first, seq - self.window - 1))
                first = seq - self.window
            missing = stream.missing
            for number in range(first, seq):
                missing[number] = now
            stream.high = seq
            self._trim(producer, topic, stream)
            return True
        when = stream.missing.pop(seq, None)
        if when is None:
            self.duplicates += 1
            return False
        if when == float("inf"):
            self.late += 1
        return True

    def _trim(self, producer: str, topic: str, stream: _Stream) -> None:
        """Numbers fallen out of the window are gaps now (unless reported already)."""
        floor = stream.high - self.window
        missing = stream.missing
        if not missing or min(missing) >= floor:
            return
        old = sorted(number for number in missing if number < floor)
        for number in old:
            if missing.pop(number) != float("inf"):
                self._overflow.extend(_ranges(producer, topic, [number]))

    def gaps(self, wait_secs: float) -> list[Gap]:
        """Numbers missing for longer than ``wait_secs``, as ranges (each reported once)."""
        due_before = self.clock() - wait_secs
        found, self._overflow = self._overflow, []
        for (producer, topic), stream in self.streams.items():
            due = sorted(n for n, when in stream.missing.items() if when <= due_before)
            for number in due:
                stream.missing[number] = float("inf")
            found.extend(_ranges(producer, topic, due))
        return _merge(found)


def _ranges(producer: str, topic: str, numbers: list[int]) -> list[Gap]:
    gaps: list[Gap] = []
    for number in numbers:
        if gaps and gaps[-1].last == number - 1:
            gaps[-1] = Gap(producer, topic, gaps[-1].first, number)
        else:
            gaps.append(Gap(producer, topic, number, number))
    return gaps


def _merge(gaps: list[Gap]) -> list[Gap]:
    merged: list[Gap] = []
    for gap in gaps:
        last = merged[-1] if merged else None
        if (
            last is not None
            and (last.producer, last.topic) == (gap.producer, gap.topic)
            and last.last == gap.first - 1
        ):
            merged[-1] = Gap(gap.producer, gap.topic, last.first, gap.last)
        else:
            merged.append(gap)
    return merged


class Printer:
    """Formats decoded events and summaries onto ``out`` (no MQTT here, for tests)."""

    def __init__(
        self,
        options: TailOptions,
        out: TextIO,
        err: TextIO,
        dedupe: Dedupe | None = None,
    ) -> None:
        self.options = options
        self.out = out
        self.err = err
        self.events = 0
        self.errors = 0
        self.dedupe = dedupe
        self._told_unnumbered = False

    def message(
        self, topic: str, payload: bytes, content_type: str | None, properties: dict[str, str]
    ) -> None:
        """One MQTT message: decode it and print what it holds (once, with ``dedupe``)."""
        dedupe = self.dedupe
        producer, seq = properties.get(PROP_PRODUCER), properties.get(PROP_SEQ)
        numbered = dedupe is not None and producer is not None and seq is not None
        if numbered and seq is not None and seq.isdigit():  # MQTT 5: no need to decode a repeat
            assert dedupe is not None and producer is not None
            if not dedupe.admit(producer, topic, int(seq)):
                return
        try:
            decoded = decode(payload, content_type=content_type, properties=properties)
        except PayloadError as error:
            self.errors += 1
            print(f"logstream tail: {topic}: cannot decode: {error}", file=self.err, flush=True)
            return
        if dedupe is not None and not numbered:
            if decoded.producer is not None and decoded.seq is not None:
                if not dedupe.admit(decoded.producer, topic, decoded.seq):
                    return
            elif not self._told_unnumbered:
                self._told_unnumbered = True
                print(
                    f"logstream tail: {topic}: messages without a producer id and number "
                    "are printed from every broker (set sequence: true on the sink)",
                    file=self.err,
                    flush=True,
                )
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
    """Follow the topics on every broker until ``count`` events were printed or Ctrl-C.
    Returns an exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    brokers = []
    for url in options.brokers:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            shown = _URL_PASSWORD.sub(r"\1***@", url)
            print(
                f"logstream tail: --url must be mqtt://host[:port] or mqtts://..., value: "
                f"{shown!r}",
                file=err,
            )
            return 2
        brokers.append(parts)
    several = len(brokers) > 1
    printer = Printer(options, out, err, Dedupe() if several else None)
    lock = threading.Lock()
    finished = threading.Event()
    broken: list[BaseException] = []
    clients = [_follow(parts, options, printer, lock, finished, broken, err) for parts in brokers]
    try:
        while not finished.wait(0.25):
            if printer.dedupe is not None:
                with lock:
                    for gap in printer.dedupe.gaps(options.gap_wait_secs):
                        print(f"logstream tail: {gap.describe()}", file=err, flush=True)
    except KeyboardInterrupt:
        finished.set()
        _stop(clients)
        return 130
    finished.set()
    _stop(clients)
    if broken:  # `logstream tail ... | head`
        # Python's final flush of stdout would fail again: point it at /dev/null.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return 0


_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)[^@\s'\"]*@")


def _follow(
    parts: SplitResult,
    options: TailOptions,
    printer: Printer,
    lock: threading.Lock,
    finished: threading.Event,
    broken: list[BaseException],
    err: TextIO,
) -> mqtt.Client:
    """One broker: a paho client on its own thread, subscribing on every connect."""
    username, password = options.username, options.password
    if parts.username:  # this broker's own user (brokers of one sink may differ)
        username = unquote(parts.username)
        password = unquote(parts.password) if parts.password is not None else password
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    where = f"{parts.scheme}://{parts.hostname}:{port}"
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

    def say(text: str) -> None:
        with lock:
            print(f"logstream tail: {text}", file=err, flush=True)

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            say(f"{where} refused the connection: {reason}")
            return
        state["failing"] = False
        client.subscribe([(topic, options.qos) for topic in options.topics])

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        again = " again" if state["connected_once"] else ""
        state["connected_once"] = True
        say(f"subscribed{again} to {', '.join(options.topics)} at {where}")

    def on_disconnect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if not finished.is_set():
            say(f"connection to {where} lost ({reason}); reconnecting")

    def on_connect_fail(client: mqtt.Client, userdata: Any) -> None:
        if not state["failing"]:
            state["failing"] = True
            say(f"cannot connect to {where}; retrying")

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        content_type, properties = _properties(message.properties)
        with lock:
            if finished.is_set():
                return
            try:
                printer.message(message.topic, bytes(message.payload), content_type, properties)
            except BrokenPipeError as error:
                broken.append(error)
                finished.set()
            if printer.done:
                finished.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.on_connect_fail = on_connect_fail
    client.on_message = on_message
    client.connect_async(parts.hostname or "", port, keepalive=30)
    client.loop_start()
    return client


def _stop(clients: list[mqtt.Client]) -> None:
    for client in clients:
        client.disconnect()
    for client in clients:
        client.loop_stop()


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
