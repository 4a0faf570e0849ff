"""``logstream top``: a terminal dashboard of a running logstream, read from ``/metrics``.

::

    logstream top                       # the monitor of config/local.yaml, every second
    LOGSTREAM_MONITOR_PASSWORD=... logstream top --url https://host:9600 --user ops --cacert ca.pem
    logstream top --once                # one frame, for scripts

Per unit: events/s in and out (and the totals), drops by reason, buffer and
spool depth, the share of time it was blocked on a full buffer, and for MQTT
sinks bytes/s against the configured byte caps
(``logstream_rate_cap_bytes_per_second``). Rates are the difference of two
scrapes over the time between them, so ``--once`` scrapes twice,
``--interval`` apart. The text is parsed with prometheus_client's parser and
drawn with rich.
"""

from __future__ import annotations

import base64
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from logstream.secrets import mask_text

PASSWORD_ENV = "LOGSTREAM_MONITOR_PASSWORD"  # noqa: S105 - the variable's name
DEFAULT_URL = "http://127.0.0.1:9600"


class TopError(Exception):
    """The monitor cannot be read; the message says why (never with a password)."""


@dataclass
class Unit:
    """One unit's values in one scrape (counters are totals since start)."""

    name: str
    kind: str
    events_in: float = 0.0
    events_out: float = 0.0
    bytes_out: float = 0.0
    blocked_secs: float = 0.0
    buffer: float | None = None
    spool_events: float | None = None
    dropped: dict[str, float] = field(default_factory=dict)
    caps: dict[str, float] = field(default_factory=dict)


@dataclass
class Scrape:
    at: float
    units: dict[str, Unit]


_COUNTERS = {
    "logstream_events_in_total": "events_in",
    "logstream_events_out_total": "events_out",
    "logstream_bytes_out_total": "bytes_out",
    "logstream_blocked_seconds_total": "blocked_secs",
}
_GAUGES = {"logstream_buffer_events": "buffer", "logstream_spool_events": "spool_events"}


def parse(text: str, at: float) -> Scrape:
    """The units in a ``/metrics`` text (Prometheus exposition format)."""
    units: dict[str, Unit] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get("unit")
            if name is None:
                continue
            unit = units.get(name)
            if unit is None:
                unit = units[name] = Unit(name, sample.labels.get("kind", ""))
            if sample.name in _COUNTERS:
                setattr(unit, _COUNTERS[sample.name], float(sample.value))
            elif sample.name in _GAUGES:
                setattr(unit, _GAUGES[sample.name], float(sample.value))
            elif sample.name == "logstream_events_dropped_total":
                reason = sample.labels.get("reason", "?")
                unit.dropped[reason] = unit.dropped.get(reason, 0.0) + float(sample.value)
            elif sample.name == "logstream_rate_cap_bytes_per_second":
                unit.caps[sample.labels.get("topic", "?")] = float(sample.value)
    return Scrape(at, units)


class MetricsReader:
    """Fetches ``/metrics`` from a monitor, with basic auth and TLS when asked."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        cafile: Path | None = None,
        timeout_secs: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers: dict[str, str] = {}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context = (
            ssl.create_default_context(cafile=str(cafile)) if cafile is not None else None
        )
        self.timeout_secs = timeout_secs

    def scrape(self) -> Scrape:
        request = urllib.request.Request(f"{self.url}/metrics", headers=self.headers)  # noqa: S310
        where = mask_text(self.url)
        try:
            with urllib.request.urlopen(  # noqa: S310 - the user's monitor URL
                request, timeout=self.timeout_secs, context=self.context
            ) as answer:
                text = answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            if error.code == 401:
                hint = (
                    "wrong user or password"
                    if "Authorization" in self.headers
                    else f"give --user and the password in ${PASSWORD_ENV}"
                )
                raise TopError(f"{where}/metrics wants credentials (401): {hint}") from None
            raise TopError(f"{where}/metrics answered HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise TopError(f"cannot read {where}/metrics: {mask_text(str(reason))}") from None
        try:
            return parse(text, time.monotonic())
        except ValueError as error:
            raise TopError(f"{where}/metrics is not Prometheus text: {error}") from None


def _rate(now: float, before: float | None, secs: float) -> float | None:
    if before is None or secs <= 0:
        return None
    return max(0.0, now - before) / secs


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover - unreachable


def frame(now: Scrape, before: Scrape | None, source: str) -> Group:
    """One dashboard frame: rates between ``before`` and ``now``, totals of ``now``."""
    secs = now.at - before.at if before is not None else 0.0
    table = Table(title=f"logstream top: {source}", title_justify="left", expand=False)
    for header, justify in (
        ("unit", "left"), ("kind", "left"), ("in/s", "right"), ("out/s", "right"),
        ("in", "right"), ("out", "right"), ("dropped", "left"), ("buffer", "right"),
        ("spool", "right"), ("blocked", "right"), ("bytes/s out", "right"), ("cap", "left"),
    ):  # fmt: skip
        table.add_column(header, justify=justify, no_wrap=header != "dropped")  # type: ignore[arg-type]
    order = {"input": 0, "filter": 1, "sink": 2, "pipeline": 3}
    for unit in sorted(now.units.values(), key=lambda u: (order.get(u.kind, 9), u.name)):
        old = before.units.get(unit.name) if before is not None else None
        in_rate = _rate(unit.events_in, old.events_in if old else None, secs)
        out_rate = _rate(unit.events_out, old.events_out if old else None, secs)
        blocked = _rate(unit.blocked_secs, old.blocked_secs if old else None, secs)
        bytes_rate = _rate(unit.bytes_out, old.bytes_out if old else None, secs)
        drops = ", ".join(f"{reason} {n:,.0f}" for reason, n in sorted(unit.dropped.items()) if n)
        blocked_text = f"{blocked:.0%}" if blocked is not None else "-"
        if unit.blocked_secs:
            blocked_text += f" ({unit.blocked_secs:,.1f} s)"
        cap = _caps(unit.caps, bytes_rate)
        table.add_row(
            unit.name,
            unit.kind,
            _num(in_rate, 1),
            _num(out_rate, 1),
            _num(unit.events_in),
            _num(unit.events_out),
            Text(drops, style="red") if drops else Text("-"),
            _num(unit.buffer),
            _num(unit.spool_events),
            blocked_text,
            f"{_bytes(bytes_rate)}/s" if unit.kind == "sink" and bytes_rate is not None else "-",
            cap,
        )
    over = f"rates over the last {secs:.1f} s" if before is not None else "rates: next scrape"
    note = Text(over, style="dim")
    return Group(table, note)


def _caps(caps: dict[str, float], bytes_rate: float | None) -> Text:
    """The byte caps, the total one compared with what the sink sends."""
    if not caps:
        return Text("-")
    parts = []
    style = ""
    for topic, cap in caps.items():
        label = "total" if topic == "*" else ("each topic" if topic == "#" else topic)
        parts.append(f"{label} {_bytes(cap)}/s")
        if topic == "*" and bytes_rate is not None and bytes_rate > 0.9 * cap:
            style = "yellow"
    return Text("; ".join(parts), style=style)


@dataclass(frozen=True)
class TopOptions:
    url: str
    user: str | None = None
    password: str | None = None
    cafile: Path | None = None
    interval_secs: float = 1.0
    once: bool = False


def monitor_defaults(config_path: Path | None) -> tuple[str, str | None, str | None, Path | None]:
    """(url, user, password, cafile) of the monitor a config runs, else the defaults."""
    if config_path is None or not config_path.is_file():
        return DEFAULT_URL, None, None, None
    from logstream.config import ConfigError, read_yaml, substitute_env
    from logstream.monitor import MonitorSettings

    try:
        data = read_yaml(config_path)
        section = data.get("monitor") if isinstance(data, dict) else None
        settings = MonitorSettings.model_validate(substitute_env(section or {}, dict(os.environ)))
    except (ConfigError, ValueError):
        return DEFAULT_URL, None, None, None
    host, _, port = settings.listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    password = settings.password.get_secret_value() if settings.password else None
    cafile = settings.tls.cert_file if settings.tls is not None else None
    return f"{settings.scheme}://{host}:{port}", settings.username, password, cafile


def run_top(options: TopOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``logstream top`` command. Returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    reader = MetricsReader(options.url, options.user, options.password, options.cafile)
    source = mask_text(options.url)
    if options.once:
        try:
            before = reader.scrape()
            time.sleep(options.interval_secs)
            now = reader.scrape()
        except TopError as error:
            print(f"logstream top: {error}", file=err)
            return 1
        console = Console(file=out, width=None if out.isatty() else 200)
        console.print(frame(now, before, source))
        return 0
    console = Console(file=out)
    previous: Scrape | None = None
    try:
        with Live(Text(f"reading {source}/metrics"), console=console, auto_refresh=False) as live:
            while True:
                try:
                    current = reader.scrape()
                    live.update(frame(current, previous, source), refresh=True)
                    previous = current
                except TopError as error:
                    problem = Text(f"logstream top: {error}; retrying", style="red")
                    live.update(problem, refresh=True)
                time.sleep(options.interval_secs)
    except KeyboardInterrupt:
        return 0


def options_from_args(args: Any) -> TopOptions:
    url, user, password, cafile = monitor_defaults(args.config)
    return TopOptions(
        url=args.url or url,
        user=args.user if args.user is not None else user,
        password=os.environ.get(PASSWORD_ENV) or password,
        cafile=args.cacert or cafile,
        interval_secs=args.interval,
        once=args.once,
    )
