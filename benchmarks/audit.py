"""Audit an Elasticsearch sink after a run: is every document it delivered in the server?

    .venv/bin/python benchmarks/audit.py -c config.yaml --events events.ndjson
    .venv/bin/python benchmarks/audit.py -c config.yaml --sink es --events out.ndjson \
        --seq-field seq --chunk 2000

``--events`` is NDJSON of the events the sink was given (the file sink's output
of the same pipeline, or a copy of the source). Each event's index and id are
computed with the sink's own settings (deterministic ids, see
``logstream/bulk.py``) and looked up with ``_mget`` in chunks of ``--chunk``
through the sink's hosts and credentials. Prints the counts and the missing
events as ranges of ``--seq-field`` (a number in each event) or of line numbers;
exit 1 when one is missing or unreadable, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script, this directory comes first on sys.path, and its nats.py would
# hide the nats package logstream imports.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import orjson  # noqa: E402

from logstream.config import Config, ConfigError, load_config  # noqa: E402
from logstream.ops import pick_elasticsearch_sink  # noqa: E402
from logstream.sinks.elasticsearch_audit import (  # noqa: E402
    AuditReport,
    audit,
    describe_ranges,
    ranges,
    targets,
)


def read_events(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of an NDJSON file, and how many lines were not one."""
    events: list[dict[str, Any]] = []
    bad = 0
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if isinstance(value, dict):
                events.append(value)
            else:
                bad += 1
    return events, bad


def labels(events: Sequence[dict[str, Any]], seq_field: str | None) -> list[int]:
    """What a missing event is called in the report: its ``seq_field`` or its line (1-based)."""
    if seq_field is None:
        return list(range(1, len(events) + 1))
    out = []
    for number, event in enumerate(events, 1):
        value = event.get(seq_field)
        out.append(value if isinstance(value, int) else -number)
    return out


async def audit_events(
    config: Config, sink_name: str | None, events: Sequence[dict[str, Any]], chunk: int
) -> AuditReport:
    """Look up every event's document through the config's Elasticsearch sink."""
    try:
        sink = pick_elasticsearch_sink(config, sink_name)  # built without its spool
    except ConfigError as error:
        raise ConfigError(str(error).replace("replay needs", "audit needs")) from None
    wanted = targets(sink, events)
    await sink.start()
    try:
        return await audit(sink, wanted, chunk=chunk)
    finally:
        await sink.close()


def summary(report: AuditReport, names: Sequence[int], undecodable: int) -> list[str]:
    """The report's lines (missing events named by ``names``)."""
    lines = [
        f"checked {report.checked} documents: {report.found} found, "
        f"{len(report.missing)} missing, {len(report.error_positions)} unreadable"
        + (f"; {undecodable} events could not be encoded (no id)" if undecodable else "")
    ]
    if report.missing:
        runs = ranges(names[i] for i in report.missing)
        lines.append(f"missing ({len(runs)} ranges): {describe_ranges(runs)}")
    if report.shared_ids:
        runs = ranges(names[i] for i in report.shared_ids)
        lines.append(
            f"{len(report.shared_ids)} events share their id with an earlier one (stored once; "
            f"a loss if they differ): {describe_ranges(runs)}"
        )
    if report.errors:
        kinds = ", ".join(f"{kind} x{count}" for kind, count in report.errors.most_common())
        lines.append(f"unreadable answers: {kinds}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", required=True, type=Path)
    parser.add_argument("--sink", default=None, help="the elasticsearch sink's name")
    parser.add_argument("--events", required=True, type=Path, help="NDJSON of the events")
    parser.add_argument("--seq-field", default=None, help="name missing events by this field")
    parser.add_argument("--chunk", type=int, default=1000, help="ids per _mget")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        events, bad = read_events(args.events)
        report = asyncio.run(audit_events(config, args.sink, events, args.chunk))
    except (ConfigError, ValueError) as error:
        print(f"audit: {error}", file=sys.stderr)
        return 2
    undecodable = len(events) - report.checked - len(report.shared_ids)
    for line in summary(report, labels(events, args.seq_field), undecodable):
        print(line)
    if bad:
        print(f"{bad} lines of {args.events} were not JSON objects (skipped)")
    return 0 if report.complete and not report.shared_ids else 1


if __name__ == "__main__":
    sys.exit(main())
