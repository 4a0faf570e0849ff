"""Counters for every unit, exported as Prometheus text.

Units count with plain integer adds on a :class:`UnitMetrics` (no locks, no
label look-ups on the hot path); a :class:`Registry` turns all of them into
Prometheus metric families when ``/metrics`` is scraped.

Metric names and drop reasons are closed sets (``Literal`` types below), so a
typo is a type error and the exported series are documented in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

UnitKind = Literal["input", "filter", "sink", "pipeline"]

DropReason = Literal[
    # The unit's bounded buffer was full and its policy is drop_newest.
    "buffer_full",
    # A UDP datagram arrived while the ingest buffer was full.
    "ingest_full",
    # The kernel dropped UDP datagrams: the socket's receive buffer was full (a burst
    # faster than logstream read it). Counted from /proc/net/udp; see SO_RCVBUF.
    "receive_buffer",
    # A TCP client refused at max_connections (one per client; its events are never read).
    "too_many_connections",
    # The MQTT client is not connected to its broker.
    "not_connected",
    # The MQTT client has too many messages the broker has not taken yet.
    "broker_backpressure",
    # The sink gave up on a batch after its retries (the error is logged).
    "sink_error",
    # The destination rejected the event itself (a 4xx item, a bad topic).
    "rejected",
    # A filter removed the event on purpose (drop, sample).
    "filtered",
    # Left out by sampling (the sample filter, or the MQTT sink's sampler keeping
    # under a byte cap); accounting records tell subscribers how many.
    "sampled",
    # A token bucket (MQTT rate_limit) had no room and the payload's queue was full.
    "rate_limited",
    # Shutdown's deadline passed before the event could be written.
    "shutdown",
    # The event could not be encoded for the sink (not serialisable).
    "encode_error",
    # A multiline filter (parse, multiline) folded the event's line into an earlier event.
    "merged",
    # Elasticsearch refused the event for good (400/404 item): it is in the dead-letter
    # file, to be replayed with `logstream replay --dlq` once the mapping is fixed.
    "dead_letter",
    # The disk spool reached max_bytes with when_full: drop_oldest; its oldest events went.
    "spool_full",
    # A fail-closed filter (redact, drop) raised on the batch: the batch went to the
    # filter's dead-letter file (<state_dir>/dead-letters/filter-<name>.ndjson), not to a sink.
    "filter_error",
    # A message from a NATS stream that is not a valid batch envelope (unknown encoding,
    # truncated or corrupt frame, bad format version): one per message (or its
    # ``events`` header); it is dead-lettered when configured and terminated.
    "bad_envelope",
    # A line of a valid NATS envelope that is not a JSON object (the others go on).
    "bad_envelope_line",
]

DecodeIssue = Literal[
    # A line that is not a JSON object: kept as a message tagged _jsonparsefailure.
    "json_parse_failure",
    # A line longer than max_line_bytes: cut and tagged _linetoolong.
    "line_too_long",
    # Invalid UTF-8: replaced and tagged _utf8error.
    "invalid_utf8",
    # A connection closed in the middle of a line: the partial line is kept.
    "truncated_line",
    # A line no parser knew (parse filter): kept as it came, tagged _parsefailure.
    "unparsed",
]

FileChange = Literal[
    # A tailed file was renamed away (rotation): read to its end, then closed.
    "file_rotated",
    # A tailed file shrank below the read offset (copytruncate): read again from 0.
    "file_truncated",
    # A tailed file was deleted: read to its end, then closed.
    "file_disappeared",
    # A matching path could not be read (permission denied, a directory, an I/O error).
    "file_unreadable",
]

# Name -> help text. Every exported series is listed here.
METRICS: dict[str, str] = {
    "logstream_events_in_total": "Events a unit received.",
    "logstream_events_out_total": "Events a unit emitted or delivered.",
    "logstream_events_unselected_total": (
        "Events a sink's `when` condition passed over (never offered to it; not drops)."
    ),
    "logstream_redactions_total": "Secrets a filter masked (redact; 0 for other filters).",
    "logstream_bytes_in_total": "Bytes a unit read from the network or disk.",
    "logstream_bytes_out_total": "Bytes a unit wrote to its destination.",
    "logstream_events_dropped_total": "Events dropped, by unit and reason.",
    "logstream_decode_issues_total": "Input records kept but tagged, by reason.",
    "logstream_blocked_seconds_total": "Seconds a unit spent waiting on a full buffer.",
    "logstream_retries_total": "Requests a sink retried.",
    "logstream_already_indexed_total": (
        "Events Elasticsearch already had (409 on create of the same id): delivered before."
    ),
    "logstream_spool_events": "Events in a sink's disk spool, not yet delivered.",
    "logstream_spool_bytes": "Bytes of a sink's disk spool segments.",
    "logstream_spool_corrupt_records_total": (
        "Damaged spool records skipped (a torn write at a crash, disk corruption)."
    ),
    "logstream_errors_total": "Unexpected errors a unit met (logged; the data was passed on).",
    "logstream_requests_refused_total": "Requests an input answered with an error, by status.",
    "logstream_protocol_errors_total": "Connections an input closed for a protocol violation.",
    "logstream_buffer_events": "Events waiting in a unit's buffer.",
    "logstream_connections": "Open client connections of an input.",
    "logstream_file_changes_total": "Rotated, truncated, deleted or unreadable files, by reason.",
    "logstream_rate_cap_bytes_per_second": (
        "A sink's configured byte cap (MQTT rate_limit): topic is the topic filter whose "
        "topics each have this cap ('#' for topic_bytes_per_sec), '*' the sink's total."
    ),
    "logstream_budget_fallback_leases_total": (
        "Token leases a sink served from its local fallback share because the shared "
        "budget (Redis) was unreachable."
    ),
    "logstream_nats_redelivered_total": (
        "NATS messages an input received again (JetStream num_delivered > 1)."
    ),
    "logstream_nats_terminated_total": (
        "NATS messages an input terminated (term: never redelivered), by reason."
    ),
}

DROP_REASONS: tuple[str, ...] = get_args(DropReason)
DECODE_ISSUES: tuple[str, ...] = get_args(DecodeIssue)


class UnitMetrics:
    """The counters of one unit. Attributes are plain ints: add to them directly."""

    def __init__(self, unit: str, kind: UnitKind) -> None:
        self.unit = unit
        self.kind = kind
        self.events_in = 0
        self.events_out = 0
        # Events a sink's `when` condition did not select: never offered, not dropped.
        self.events_unselected = 0
        # Secrets masked (redact filter).
        self.redactions = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.retries = 0
        self.errors = 0
        # HTTP-style inputs: refused requests by status code.
        self.refused: defaultdict[int, int] = defaultdict(int)
        # Framed protocols (beats): connections closed for a violation, by reason.
        self.protocol_errors: defaultdict[str, int] = defaultdict(int)
        self.blocked_secs = 0.0
        self.connections = 0
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self.decode_issues: defaultdict[str, int] = defaultdict(int)
        # File inputs: rotations, truncations, deletions, unreadable paths.
        self.file_changes: defaultdict[str, int] = defaultdict(int)
        # A callable giving the current buffer depth, set by the unit's owner.
        self.buffer_depth: Callable[[], int] | None = None
        # Elasticsearch: events found already indexed (409 on create).
        self.already_indexed = 0
        # A disk spool: callables giving its pending events and bytes on disk, and the
        # damaged records it skipped.
        self.spool_events: Callable[[], int] | None = None
        self.spool_bytes: Callable[[], int] | None = None
        self.spool_corrupt_records = 0
        # A shared budget (mqtt rate_limit.shared): leases served locally while Redis was down.
        self.budget_fallback_leases = 0
        # Configured byte caps (MQTT rate_limit): topic filter ('#' every topic, '*' total)
        # -> bytes/s.
        self.rate_caps: dict[str, float] = {}
        # A nats input: messages delivered more than once, and terminated by reason.
        self.nats_redelivered = 0
        self.nats_terminated: defaultdict[str, int] = defaultdict(int)

    def drop(self, count: int, reason: DropReason) -> None:
        """Count ``count`` events dropped for ``reason``."""
        self.dropped[reason] += count

    def decode_issue(self, reason: DecodeIssue, count: int = 1) -> None:
        """Count input records that were kept but tagged because of ``reason``."""
        self.decode_issues[reason] += count

    def file_change(self, reason: FileChange) -> None:
        """Count one change a file input met in a tailed file."""
        self.file_changes[reason] += 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def snapshot(self) -> dict[str, object]:
        """A plain dict of the counters, for logs, tests and shutdown reports."""
        return {
            "unit": self.unit,
            "kind": self.kind,
            "events_in": self.events_in,
            "events_out": self.events_out,
            "events_unselected": self.events_unselected,
            "redactions": self.redactions,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": dict(self.dropped),
            "decode_issues": dict(self.decode_issues),
            "retries": self.retries,
            "errors": self.errors,
        }


def counters_table(units: Iterable[UnitMetrics]) -> str:
    """The final counters as an aligned table, one row per unit (for the shutdown log)::

    unit           kind      in     out  dropped                 other
    tcp            input     500    0    -                       bytes_in 51234
    elasticsearch  sink      500    498  rejected 2              retries 1
    """
    rows = [("unit", "kind", "in", "out", "dropped", "other")]
    for unit in units:
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(unit.dropped.items()) if n)
        other = [
            f"{name} {value}"
            for name, value in (
                ("unselected", unit.events_unselected),
                ("bytes_in", unit.bytes_in),
                ("bytes_out", unit.bytes_out),
                ("redactions", unit.redactions),
                ("retries", unit.retries),
                ("errors", unit.errors),
            )
            if value
        ]
        other += [f"{issue} {n}" for issue, n in sorted(unit.decode_issues.items()) if n]
        rows.append(
            (
                unit.unit,
                unit.kind,
                str(unit.events_in),
                str(unit.events_out),
                dropped or "-",
                ", ".join(other) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(
            [*(cell.rjust(w) if i in (2, 3) else cell.ljust(w) for i, (cell, w) in
               enumerate(zip(row[:5], widths, strict=True))), row[5]]
        ).rstrip()
        for row in rows
    )  # fmt: skip


class Registry(Collector):
    """Every unit's metrics; collects them into Prometheus families on scrape."""

    def __init__(self) -> None:
        self._units: dict[str, UnitMetrics] = {}
        self.prometheus = CollectorRegistry(auto_describe=False)
        self.prometheus.register(self)

    def unit(self, name: str, kind: UnitKind) -> UnitMetrics:
        """The metrics of unit ``name``, created on first use."""
        metrics = self._units.get(name)
        if metrics is None:
            metrics = self._units[name] = UnitMetrics(name, kind)
        return metrics

    def __getitem__(self, name: str) -> UnitMetrics:
        return self._units[name]

    def units(self) -> list[UnitMetrics]:
        return list(self._units.values())

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.prometheus)

    def collect(self) -> Iterator[Metric]:
        labels = ["unit", "kind"]

        def counter(name: str, extra: list[str] | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(
                name.removesuffix("_total"), METRICS[name], labels=labels + (extra or [])
            )

        events_in = counter("logstream_events_in_total")
        events_out = counter("logstream_events_out_total")
        unselected = counter("logstream_events_unselected_total")
        redactions = counter("logstream_redactions_total")
        bytes_in = counter("logstream_bytes_in_total")
        bytes_out = counter("logstream_bytes_out_total")
        dropped = counter("logstream_events_dropped_total", ["reason"])
        issues = counter("logstream_decode_issues_total", ["reason"])
        blocked = counter("logstream_blocked_seconds_total")
        retries = counter("logstream_retries_total")
        errors = counter("logstream_errors_total")
        refused = counter("logstream_requests_refused_total", ["status"])
        protocol = counter("logstream_protocol_errors_total", ["reason"])
        files = counter("logstream_file_changes_total", ["reason"])
        already = counter("logstream_already_indexed_total")
        corrupt = counter("logstream_spool_corrupt_records_total")
        fallback = counter("logstream_budget_fallback_leases_total")
        redelivered = counter("logstream_nats_redelivered_total")
        terminated = counter("logstream_nats_terminated_total", ["reason"])
        spool_events = GaugeMetricFamily(
            "logstream_spool_events", METRICS["logstream_spool_events"], labels=labels
        )
        spool_bytes = GaugeMetricFamily(
            "logstream_spool_bytes", METRICS["logstream_spool_bytes"], labels=labels
        )
        depth = GaugeMetricFamily(
            "logstream_buffer_events", METRICS["logstream_buffer_events"], labels=labels
        )
        conns = GaugeMetricFamily(
            "logstream_connections", METRICS["logstream_connections"], labels=labels
        )
        caps = GaugeMetricFamily(
            "logstream_rate_cap_bytes_per_second",
            METRICS["logstream_rate_cap_bytes_per_second"],
            labels=[*labels, "topic"],
        )
        for m in self._units.values():
            key = [m.unit, m.kind]
            for topic, cap in m.rate_caps.items():
                caps.add_metric([*key, topic], cap)
            events_in.add_metric(key, m.events_in)
            events_out.add_metric(key, m.events_out)
            if m.kind == "sink":
                unselected.add_metric(key, m.events_unselected)
            if m.kind == "filter":
                redactions.add_metric(key, m.redactions)
            bytes_in.add_metric(key, m.bytes_in)
            bytes_out.add_metric(key, m.bytes_out)
            blocked.add_metric(key, m.blocked_secs)
            retries.add_metric(key, m.retries)
            errors.add_metric(key, m.errors)
            for reason, count in m.dropped.items():
                dropped.add_metric([*key, reason], count)
            for reason, count in m.decode_issues.items():
                issues.add_metric([*key, reason], count)
            for status, count in m.refused.items():
                refused.add_metric([*key, str(status)], count)
            for reason, count in m.protocol_errors.items():
                protocol.add_metric([*key, reason], count)
            for reason, count in m.file_changes.items():
                files.add_metric([*key, reason], count)
            if m.buffer_depth is not None:
                depth.add_metric(key, m.buffer_depth())
            if m.already_indexed:
                already.add_metric(key, m.already_indexed)
            if m.spool_events is not None and m.spool_bytes is not None:
                spool_events.add_metric(key, m.spool_events())
                spool_bytes.add_metric(key, m.spool_bytes())
                corrupt.add_metric(key, m.spool_corrupt_records)
            if m.kind == "input":
                conns.add_metric(key, m.connections)
            if m.budget_fallback_leases:
                fallback.add_metric(key, m.budget_fallback_leases)
            if m.nats_redelivered:
                redelivered.add_metric(key, m.nats_redelivered)
            for reason, count in m.nats_terminated.items():
                terminated.add_metric([*key, reason], count)
        yield from (events_in, events_out, bytes_in, bytes_out, dropped, issues, blocked)
        yield from (retries, errors, unselected, redactions, refused, protocol, files)
        yield from (depth, conns, already, corrupt, spool_events, spool_bytes, fallback, caps)
        yield from (redelivered, terminated)
