"""Sampling parts shared by the ``sample`` filter and the MQTT sink's bandwidth control.

- :class:`LevelIndexer`: an event's severity as an index into the ordered
  scale of :mod:`logstream.severity` (TRACE=0 .. CRITICAL=6), cached.
- :func:`key_hasher`: a stable hash (BLAKE2b, not Python's ``hash()``) of
  configured fields, mapped to [0, 1), so the same key is kept or dropped
  the same way in every process and every run.
- :class:`BudgetController`: chooses a keep ratio per severity, once per
  window, so that the bytes of what is kept fit a byte budget, taking from
  the lowest severities first.
- :func:`accounting_record`: the event that tells subscribers what they did
  not get, so they can scale counts back up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import orjson

from logstream.event import Event
from logstream.payload import ACCOUNTING_TYPE, FORMAT_VERSION, rate_json
from logstream.severity import Severity, from_text

SEVERITIES: Final = tuple(sorted(Severity))
LEVELS: Final = len(SEVERITIES)
INDEX_OF: Final = {severity: index for index, severity in enumerate(SEVERITIES)}
LEVEL_NAMES: Final = tuple(severity.name for severity in SEVERITIES)

_CACHE_MAX = 1024


class LevelIndexer:
    """``event -> severity index`` from the event's ``field`` (``level``).

    A missing or unknown level counts as ``unknown`` (INFO by default): it is
    neither protected like an error nor sacrificed first like debug output.
    """

    def __init__(self, field: str = "level", unknown: Severity = Severity.INFO) -> None:
        self.field = field
        self.unknown = INDEX_OF[unknown]
        self._cache: dict[str, int] = {name: index for index, name in enumerate(LEVEL_NAMES)}

    def __call__(self, event: Event) -> int:
        value = event.get(self.field)
        if type(value) is str:
            hit = self._cache.get(value)
            if hit is not None:
                return hit
        return self._slow(value)

    def _slow(self, value: object) -> int:
        severity = from_text(value)
        index = self.unknown if severity is None else INDEX_OF[severity]
        if type(value) is str:
            if len(self._cache) >= _CACHE_MAX:
                self._cache = {name: i for i, name in enumerate(LEVEL_NAMES)}
            self._cache[value] = index
        return index


def key_hasher(fields: Sequence[str]) -> Callable[[Event], float]:
    """``event -> [0, 1)``: a BLAKE2b hash of the values of ``fields`` (stable across runs)."""
    blake2b = hashlib.blake2b
    scale = 1.0 / 2.0**64
    if len(fields) == 1:
        (name,) = fields

        def one(event: Event) -> float:
            value = event.get(name)
            data = value.encode() if type(value) is str else _dumps(value)
            return int.from_bytes(blake2b(data, digest_size=8).digest(), "big") * scale

        return one
    names = list(fields)

    def several(event: Event) -> float:
        data = _dumps([event.get(name) for name in names])
        return int.from_bytes(blake2b(data, digest_size=8).digest(), "big") * scale

    return several


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


# --------------------------------------------------------------------------- budget control


class BudgetController:
    """Keep ratios per severity so the bytes/s of what is kept fit ``bytes_per_sec``.

    Feed-forward with smoothing: the owner counts the events offered per
    severity (``offered``) and reports the bytes that kept events cost
    (:meth:`measure`); :meth:`update`, called once per window, turns the
    smoothed offered rates and bytes per event into ratios. The budget is
    handed out from CRITICAL down: a severity whose whole offered load fits
    in what is left is kept entirely, the first one that does not fit gets
    the remainder as a ratio, and everything below it gets 0.

    Protected severities (``protect`` and above, WARNING by default) are
    measured against the whole budget (``bytes_per_sec * fill``, more if the
    trim is above 1), never against what the trim or a backlog takes away:
    they are kept entirely while they alone fit (judged on offered rates
    smoothed both ways, so a one-window spike is left to the rate limiter's
    queue, which gives up lower severities first), and the lower severities
    give up their share first (DEBUG, then INFO, then NOTICE). A protected
    severity whose ratio may rise to 1 does so at once.

    Before the first window that saw offered events the ratios below
    ``protect`` are ``start_ratio`` (1.0: everything is offered; 0.0: only
    protected severities pass until something is measured); that first
    window sets the ratios straight to their targets instead of half-way.

    Smoothing, so the ratios settle instead of oscillating: bytes per event,
    and offered rates when they fall (except the first window's rates, which
    the second window replaces: a start is a surge of its own), are exponential
    moving averages
    (``smoothing`` is the weight of the newest window), while a rising
    offered rate is believed at once so the budget holds through a surge; a
    ratio falls at once when the budget needs it, but rises by at most half
    of the way to its new value per window.

    Feedback, so the estimate's errors do not cost bandwidth: while sampling
    is active, a trim factor (0.5 to 1.5) moves the budget by a quarter of
    the relative gap between the bytes actually kept in the window and the
    target (``fill`` of the budget), an integral term that brings the kept
    bytes onto the target (gaps over 20% are a change of load, left to the
    feed-forward, so the trim does not wind up); ``backlog_bytes`` (bytes waiting for the rate
    limiter) lowers the next window's budget by a quarter of the backlog, so
    a queue drains instead of growing into drops. An owner that keeps a standing
    queue (so the limiter never waits for a payload) passes the backlog above
    that target: a negative one raises the budget, and the severities below
    ``protect`` then rise to their ratios at once.
    """

    def __init__(
        self,
        bytes_per_sec: float,
        *,
        smoothing: float = 0.5,
        fill: float = 0.98,
        default_bytes_per_event: float = 300.0,
        protect: Severity = Severity.WARNING,
        start_ratio: float = 1.0,
    ) -> None:
        if bytes_per_sec <= 0:
            raise ValueError(f"bytes_per_sec must be above 0, value: {bytes_per_sec}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], value: {smoothing}")
        if not 0 <= start_ratio <= 1:
            raise ValueError(f"start_ratio must be in [0, 1], value: {start_ratio}")
        self.bytes_per_sec = float(bytes_per_sec)
        self.smoothing = smoothing
        self.fill = fill
        self.default_bytes_per_event = default_bytes_per_event
        self.protect = INDEX_OF[protect]
        self.ratios: list[float] = [
            1.0 if index >= self.protect else start_ratio for index in range(LEVELS)
        ]
        self.started = False  # a window with offered events has been closed
        self._provisional = False  # the last window was the first: its rates are replaced
        # Events offered per severity since the last update; the owner adds to it.
        self.offered: list[float] = [0.0] * LEVELS
        self.rates: list[float | None] = [None] * LEVELS  # smoothed events/s offered
        # Smoothed both ways: whether protected severities alone overflow the budget is
        # judged on this, so a one-window spike is left to the queue, not sampled.
        self.average_rates: list[float] = [0.0] * LEVELS
        self.bytes_per_event: list[float | None] = [None] * LEVELS
        self._measured_events = [0] * LEVELS
        self._measured_bytes = [0.0] * LEVELS
        self.trim = 1.0

    def measure(self, index: int, events: int, nbytes: float) -> None:
        """``events`` kept events of severity ``index`` cost ``nbytes`` bytes."""
        self._measured_events[index] += events
        self._measured_bytes[index] += nbytes

    def update(self, elapsed_secs: float, backlog_bytes: float = 0.0) -> list[float]:
        """Close a window of ``elapsed_secs``; return (and keep) the new ratios."""
        if elapsed_secs <= 0:
            return self.ratios
        if not self.started and not any(self.offered):
            # Nothing offered yet: a rate of 0 would open every ratio before any load.
            self._measured_events = [0] * LEVELS
            self._measured_bytes = [0.0] * LEVELS
            return self.ratios
        first, self.started = not self.started, True
        # The first window's rates are believed for one window only: a start is a
        # surge of its own (clients connecting at once, what waited in socket buffers),
        # and smoothing its fall would undersample for several windows. (The protected
        # severities' averages stay smoothed: a surge of them is left to the queue.)
        replace, self._provisional = self._provisional, first
        alpha = self.smoothing
        offered = self.offered
        target = self.bytes_per_sec * self.fill
        kept_rate = sum(self._measured_bytes) / elapsed_secs
        error = (target - kept_rate) / target
        # The first window with a load replaces the start ratios, which were a guess.
        leap = first
        # Only while sampling, and only for small gaps: the feed-forward handles a
        # change of load, and the trim must not wind up on its transient.
        if kept_rate > 0 and min(self.ratios) < 1.0 and abs(error) < 0.2:
            self.trim = min(1.5, max(0.5, self.trim * (1.0 + 0.25 * error)))
        for index in range(LEVELS):
            rate = offered[index] / elapsed_secs
            previous = self.rates[index]
            # A rise is believed at once (the budget must hold), a fall is smoothed.
            self.rates[index] = (
                rate
                if previous is None or rate > previous or replace
                else previous + alpha * (rate - previous)
            )
            average = self.average_rates[index]
            self.average_rates[index] = rate if first else average + alpha * (rate - average)
            offered[index] = 0.0
            events = self._measured_events[index]
            if events:
                cost = self._measured_bytes[index] / events
                known = self.bytes_per_event[index]
                self.bytes_per_event[index] = (
                    cost if known is None else known + alpha * (cost - known)
                )
                self._measured_events[index] = 0
                self._measured_bytes[index] = 0.0
        fallback = self._fallback_bytes_per_event()
        full = target * max(1.0, self.trim)
        budget = max(0.0, target * self.trim - 0.25 * backlog_bytes)
        # Protected severities first, against the whole budget ...
        remaining = full
        for index in range(LEVELS - 1, self.protect - 1, -1):
            need = self.average_rates[index] * (self.bytes_per_event[index] or fallback)
            share = 1.0 if need <= remaining else remaining / need
            remaining = max(0.0, remaining - need)
            current = self.ratios[index]
            self.ratios[index] = (
                share
                if share <= current or share == 1.0 or leap
                else current + 0.5 * (share - current)
            )
        # ... then the others get what the protected ones leave of the trimmed budget.
        # A backlog under its target (negative) means the budget goes unused: rising
        # at once costs only queue, which the next window's backlog term corrects.
        leap = leap or backlog_bytes < 0
        remaining = max(0.0, budget - (full - remaining))
        for index in range(self.protect - 1, -1, -1):
            need = (self.rates[index] or 0.0) * (self.bytes_per_event[index] or fallback)
            share = 1.0 if need <= remaining else remaining / need
            remaining = max(0.0, remaining - need)
            current = self.ratios[index]
            self.ratios[index] = (
                share if share <= current or leap else current + 0.5 * (share - current)
            )
        return self.ratios

    def _fallback_bytes_per_event(self) -> float:
        known = [cost for cost in self.bytes_per_event if cost is not None]
        return sum(known) / len(known) if known else self.default_bytes_per_event

    def expected_bytes_per_sec(self) -> float:
        """What the current ratios are expected to keep, in bytes/s."""
        fallback = self._fallback_bytes_per_event()
        return sum(
            (self.rates[i] or 0.0) * (self.bytes_per_event[i] or fallback) * self.ratios[i]
            for i in range(LEVELS)
        )


# --------------------------------------------------------------------------- accounting


def timestamp(wall_secs: float) -> str:
    """Epoch seconds as Logstash writes ``@timestamp``."""
    moment = dt.datetime.fromtimestamp(wall_secs, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def by_name(counts: Sequence[int | float]) -> dict[str, int | float]:
    """Per-severity counts as ``{"INFO": 3, ...}``, zeros left out."""
    return {LEVEL_NAMES[i]: count for i, count in enumerate(counts) if count}


def accounting_record(
    *,
    unit: str,
    start_wall: float,
    end_wall: float,
    suppressed: Mapping[str, Sequence[int]],
    kept: Sequence[int],
    sample_rates: Mapping[str, float],
    topic: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> Event:
    """The event that tells subscribers how many events of each severity were left out.

    ``suppressed`` maps a reason (``sampled``, ``rate_limited``) to counts per
    severity index; ``kept`` counts what was passed on in the same window.
    ``extra`` fields (the filter's accounting fields) are copied to the top
    level so topic templates place the record next to the events it describes.
    """
    by_reason = {reason: by_name(counts) for reason, counts in suppressed.items()}
    total = sum(sum(counts.values()) for counts in by_reason.values())
    parts = [
        f"{reason} " + ", ".join(f"{name} {count}" for name, count in counts.items())
        for reason, counts in by_reason.items()
        if counts
    ]
    where = f" on {topic}" if topic is not None else ""
    window = round(float(end_wall - start_wall), 3)
    record: Event = dict(extra or {})
    record.update(
        {
            "@timestamp": timestamp(end_wall),
            "@version": "1",
            "type": ACCOUNTING_TYPE,
            "level": "NOTICE",
            "message": f"{unit}: {total} events suppressed{where} in {window} s"
            + (f" ({'; '.join(parts)})" if parts else ""),
            "logstream": {
                "format": FORMAT_VERSION,
                "unit": unit,
                **({"topic": topic} if topic is not None else {}),
                "from": timestamp(start_wall),
                "to": timestamp(end_wall),
                "window_secs": window,
                "suppressed": sum_by_name(by_reason),
                **by_reason,
                "kept": by_name(kept),
                "sample_rates": {
                    name: orjson.loads(rate_json(rate)) for name, rate in sample_rates.items()
                },
            },
        }
    )
    return record


def sum_by_name(by_reason: Mapping[str, Mapping[str, int | float]]) -> dict[str, int | float]:
    total: dict[str, int | float] = {}
    for counts in by_reason.values():
        for name, count in counts.items():
            total[name] = total.get(name, 0) + count
    return {name: total[name] for name in LEVEL_NAMES if name in total}
