"""Broker bytes per log event for each MQTT payload encoding, against one JSON message per event.

Builds python-logstash (version 1) events from the log files in
``../shared/corpus`` (generated ones when it is absent; nothing from the
corpus is copied into the repository), groups them by topic as the mqtt sink
does (``--topic``, default ``logs/{host}/{level}``), and counts the bytes a
broker receives: whole PUBLISH packets (fixed header, topic, MQTT 5
properties when the encoding carries them) with their payloads.

- ``baseline``: one JSON event per MQTT 3.1.1 message, no properties: the 2016 design.
- ``json``: one event per MQTT 5 message with logstream's properties.
- ``ndjson``, ``lz4``, ``lz4 -9`` (level 9, lz4 HC), ``zstd`` (level 3), ``zstd -9``:
  batches of N events of one topic.
- zstd with a dictionary trained on every other event, against zstd without one
  on the remaining events (measured only: subscribers would need the dictionary).
- ``sampled+lz4``: the ``sample`` filter with per-level rates (every WARNING+
  kept, 1 in 10 NOTICE/INFO, 1 in 100 DEBUG/TRACE) and its accounting records
  (every 10 s at ``--events-per-sec``), then lz4 batches.

Computed, not measured on a broker (``logstream bench bandwidth`` measures a
real one); byte counts do not depend on the machine. Run from the repository
root::

    .venv/bin/python benchmarks/mqtt_bytes.py
    .venv/bin/python benchmarks/mqtt_bytes.py --topic 'logs/{host}' --json bytes.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import zstandard

from logstream.bench.corpus import DEFAULT_CORPUS as CORPUS
from logstream.clock import ManualClock
from logstream.event import Event
from logstream.filters.sample import SampleFilterConfig
from logstream.metrics import Registry, UnitMetrics
from logstream.payload import framer, join_lines, serialise
from logstream.severity import Severity, from_http_status, from_text
from logstream.sinks.mqtt import compile_topic, payload_properties, wire_size
from logstream.units import BuildContext

BATCH_SIZES = (10, 100, 1000)
SAMPLING = {"WARNING": 1, "INFO": 10, "DEBUG": 100}  # NOTICE as INFO, TRACE as DEBUG

_LEVEL = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|AUDIT|WARNING|WARN|ERROR|CRITICAL|FATAL)\b|\b(fatal|failed):"
)
_HTTP_STATUS = re.compile(r'" (\d{3}) ')


# --------------------------------------------------------------------------- events


def level_of(line: str) -> str:
    """The severity a log line states (oslo, ansible, syslog words; HTTP status), else INFO."""
    match = _HTTP_STATUS.search(line)
    if match and line[:1].isdigit() and "HTTP/" in line:
        return from_http_status(int(match.group(1))).name
    match = _LEVEL.search(line[:300])
    if match is None:
        return "INFO"
    if match.group(2):
        return "ERROR"
    severity = from_text(match.group(1))
    return severity.name if severity is not None else "INFO"


def corpus_events() -> list[Event]:
    """python-logstash version 1 events, one per corpus log line (and AWX job event)."""
    events: list[Event] = []
    start = dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC)
    for path in sorted(CORPUS.iterdir()):
        if not path.is_file() or path.suffix not in (".json", ".log", ".txt"):
            continue
        host = "-".join(path.stem.split("-")[:2])
        if path.suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
            for item in document.get("results", []):
                failed = item.get("failed") or item.get("event") == "runner_on_unreachable"
                events.append(
                    {
                        **item,
                        "message": item.get("stdout") or item.get("event_display", ""),
                        "level": "ERROR" if failed else "INFO",
                        "host": host,
                    }
                )
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            events.append(
                {
                    "message": line,
                    "host": host,
                    "path": f"/var/log/{path.name}",
                    "tags": [],
                    "type": "logstash",
                    "level": level_of(line),
                    "logger_name": path.stem.split("-")[-2],
                    "stack_info": None,
                }
            )
    for n, event in enumerate(events):  # timestamps 3 ms apart, as a busy stream would have
        moment = start + dt.timedelta(milliseconds=3 * n)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        event.update({"@timestamp": stamp, "@version": "1"})
    return events


def generated_events(count: int = 20_000) -> list[Event]:
    """Log-like events when the corpus is absent (repetitive, as real logs are)."""
    levels = ["DEBUG"] * 40 + ["INFO"] * 52 + ["WARNING"] * 6 + ["ERROR"] * 2
    return [
        {
            "@timestamp": f"2026-11-24T10:{n // 60000 % 60:02d}:{n // 1000 % 60:02d}."
            f"{n % 1000:03d}Z",
            "@version": "1",
            "message": f"req-{n * 7919 % 100000:05d} GET /api/v1/items/{n % 997} returned "
            f"{200 if n % 23 else 500} in {n * 31 % 900} ms",
            "host": f"web-{n % 4}",
            "path": "/srv/app/api.py",
            "tags": [],
            "type": "logstash",
            "level": levels[n * 37 % 100],
            "logger_name": "app.api",
            "stack_info": None,
        }
        for n in range(count)
    ]


# --------------------------------------------------------------------------- measuring


def group(events: list[Event], template: str) -> dict[str, list[Event]]:
    topic_of = compile_topic(template)
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(topic_of(event), []).append(event)
    return groups


def baseline_bytes(groups: dict[str, list[Event]]) -> int:
    """One JSON event per MQTT 3.1.1 QoS 0 message."""
    metrics = UnitMetrics("bench", "sink")
    return sum(
        wire_size(len(topic.encode()), len(line), 0, None)
        for topic, events in groups.items()
        for line in serialise(events, metrics)
    )


def batched_bytes(
    groups: dict[str, list[Event]],
    batch: int,
    frame: Callable[[bytes], bytes],
    encoding: str,
) -> tuple[int, int, int]:
    """(wire bytes, payload bytes, NDJSON bytes) for batches of ``batch`` events per topic,
    sent as MQTT 5 messages with logstream's properties."""
    metrics = UnitMetrics("bench", "sink")
    wire = payload = raw = 0
    for topic, events in groups.items():
        lines = serialise(events, metrics)
        for at in range(0, len(lines), batch):
            chunk = lines[at : at + batch]
            data = join_lines(chunk) if batch > 1 else chunk[0]
            framed = frame(data)
            props = len(payload_properties(encoding, len(chunk)).pack())
            wire += wire_size(len(topic.encode()), len(framed), 0, props)
            payload += len(framed)
            raw += len(data)
    return wire, payload, raw


def sampled(events: list[Event], events_per_sec: float) -> tuple[list[Event], int, int]:
    """The sample filter over the stream: (kept events and accounting records, WARNING+
    offered, WARNING+ kept)."""
    clock = ManualClock()
    config = SampleFilterConfig.model_validate(
        {
            "type": "sample",
            "levels": SAMPLING,
            "accounting_fields": ["host"],
            "accounting_interval_secs": 10,
        }
    )
    unit = config.build("sample", BuildContext(registry=Registry(), clock=clock))
    out: list[Event] = []
    copies = [dict(event) for event in events]
    for at in range(0, len(copies), 500):
        out.extend(unit.process(copies[at : at + 500]))
        clock.advance(500 / events_per_sec)
        out.extend(unit.tick(clock.monotonic()))
    out.extend(unit.flush())
    important = sum(1 for e in events if _important(e))
    kept = sum(1 for e in out if e.get("type") != "logstream.accounting" and _important(e))
    return out, important, kept


def _important(event: Event) -> bool:
    severity = from_text(event.get("level"))
    return severity is not None and severity >= Severity.WARNING


def zstd_dictionary_gain(events: list[Event], template: str, batch: int) -> float:
    """How many times fewer wire bytes zstd makes with a 16 KiB dictionary trained on
    every other event than without one, measured on the remaining events."""
    metrics = UnitMetrics("bench", "sink")
    samples: list[bytes | bytearray | memoryview] = list(serialise(events[::2], metrics))
    dictionary = zstandard.train_dictionary(16 * 1024, samples)
    with_dict = zstandard.ZstdCompressor(level=3, dict_data=dictionary)
    test = group(events[1::2], template)
    wire_dict, _, _ = batched_bytes(test, batch, with_dict.compress, "zstd")
    wire_plain, _, _ = batched_bytes(test, batch, framer("zstd").frame, "zstd")
    return wire_plain / wire_dict


def levels_of(events: Iterable[Event]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        name = str(event.get("level"))
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", default="logs/{host}/{level}", help="topic template")
    parser.add_argument("--events-per-sec", type=float, default=2000.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    events = corpus_events() if CORPUS.is_dir() else generated_events()
    source = f"corpus {CORPUS}" if CORPUS.is_dir() else "generated events (no corpus)"
    groups = group(events, args.topic)
    count = len(events)
    base = baseline_bytes(groups)
    print(f"{count} events from {source}; topics {args.topic!r}: {len(groups)} topics")
    print(f"levels: {levels_of(events)}")
    print(f"baseline (one JSON message per event, MQTT 3.1.1): {base / count:.1f} B/event\n")
    rows: list[dict[str, Any]] = []

    def row(name: str, batch: int | str, wire: int, events_: int, ratio: float | None) -> None:
        per_event = wire / events_
        rows.append(
            {
                "encoding": name,
                "batch": batch,
                "bytes_per_event": round(per_event, 2),
                "times_fewer": round(base / count / per_event, 1),
                "compression": None if ratio is None else round(ratio, 1),
            }
        )

    encodings: list[tuple[str, str, Callable[[bytes], bytes]]] = [
        ("ndjson", "ndjson", framer("ndjson").frame),
        ("lz4", "lz4", framer("lz4").frame),
        ("lz4 -9", "lz4", framer("lz4", 9).frame),
        ("zstd", "zstd", framer("zstd").frame),
        ("zstd -9", "zstd", framer("zstd", 9).frame),
    ]
    timings: dict[str, float] = {}
    dictionary_gains: dict[int, float] = {}
    wire, _, _ = batched_bytes(groups, 1, framer("json").frame, "json")
    row("json (MQTT 5)", 1, wire, count, None)
    for batch in BATCH_SIZES:
        for name, encoding, frame in encodings:
            started = time.perf_counter()
            wire, payload, raw = batched_bytes(groups, batch, frame, encoding)
            timings[f"{name}/{batch}"] = (time.perf_counter() - started) / count * 1e6
            ratio = raw / payload if encoding != "ndjson" else None
            row(name, batch, wire, count, ratio)
        dictionary_gains[batch] = zstd_dictionary_gain(events, args.topic, batch)
    kept, important, important_kept = sampled(events, args.events_per_sec)
    for batch in BATCH_SIZES:
        wire, _, _ = batched_bytes(group(kept, args.topic), batch, framer("lz4").frame, "lz4")
        row("sampled+lz4", batch, wire, count, None)

    print(f"{'encoding':<14} {'batch':>5} {'B/event':>8} {'x fewer':>8} {'compression':>11}")
    for item in rows:
        compression = "" if item["compression"] is None else f"{item['compression']:.1f}x"
        print(
            f"{item['encoding']:<14} {item['batch']:>5} {item['bytes_per_event']:>8.1f} "
            f"{item['times_fewer']:>7.1f}x {compression:>11}"
        )
    records = sum(1 for e in kept if e.get("type") == "logstream.accounting")
    print(
        f"\nsampling {SAMPLING}: kept {len(kept) - records} of {count} events "
        f"+ {records} accounting records; WARNING+ kept {important_kept} of {important}"
    )
    print(
        "zstd with a trained 16 KiB dictionary vs without: "
        + ", ".join(f"batch {b}: {g:.2f}x fewer bytes" for b, g in dictionary_gains.items())
    )
    print(
        "CPU µs/event to frame (this machine): "
        + ", ".join(f"{name} {us:.2f}" for name, us in timings.items() if name.endswith("/1000"))
    )
    if args.json:
        args.json.write_text(
            orjson.dumps(
                {
                    "events": count,
                    "source": source,
                    "topic": args.topic,
                    "baseline_bytes_per_event": round(base / count, 2),
                    "rows": rows,
                    "zstd_dictionary_gain": dictionary_gains,
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )


if __name__ == "__main__":
    main()
