"""What the benchmarks send: log records from a corpus directory, or generated ones.

A *record* is the JSON object a log shipper would send for one line (Filebeat
style: the raw line in ``message`` with ``host``, ``path`` and ``type``); the
pipeline's ``parse`` filter finds the format and the severity. AWX job events
(``*.json`` with a ``results`` list) are sent as the events themselves.

Files are interleaved in proportion to their length (each file's lines stay
in order), so the mix of formats and severities is steady over a run, as on
a busy collector that receives many streams at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

# ../shared/corpus relative to the repository (logstream/bench/ is two levels down).
DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
_SUFFIXES = (".log", ".txt", ".json")
_MAX_LINE_CHARS = 16_384


def default_corpus() -> Path | None:
    """``../shared/corpus`` beside the repository when it exists, else None (generate)."""
    return DEFAULT_CORPUS if DEFAULT_CORPUS.is_dir() else None


def corpus_records(directory: Path) -> list[dict[str, Any]]:
    """One record per non-empty line of every ``.log``/``.txt`` file (and per AWX job
    event of every ``.json`` file) in ``directory``, interleaved."""
    streams: list[list[dict[str, Any]]] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix not in _SUFFIXES:
            continue
        host = "-".join(path.stem.split("-")[:2])
        where = {"host": host, "path": f"/var/log/{path.name}", "type": "log"}
        if path.suffix == ".json":
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                continue
            items = document.get("results", []) if isinstance(document, dict) else []
            records = [{**item, **where} for item in items if isinstance(item, dict)]
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            records = [
                {"message": line[:_MAX_LINE_CHARS], **where}
                for line in text.splitlines()
                if line.strip()
            ]
        if records:
            streams.append(records)
    return interleave(streams)


def interleave(streams: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge streams so that each is spread evenly over the result, keeping its order."""
    keyed = [
        ((index + 0.5) / len(stream), number, record)
        for number, stream in enumerate(streams)
        for index, record in enumerate(stream)
    ]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [record for _, _, record in keyed]


# Severity mix of the generated data (per 100 lines): chatty DEBUG and INFO,
# a few NOTICE, WARNING and ERROR lines, as in a production service's logs.
_MIX = ["DEBUG"] * 38 + ["INFO"] * 50 + ["NOTICE"] * 3 + ["WARNING"] * 6 + ["ERROR"] * 3
_SYSLOG_PRI = {"DEBUG": 191, "INFO": 190, "NOTICE": 189, "WARNING": 188, "ERROR": 187}
_HTTP_STATUS = {"DEBUG": 200, "INFO": 200, "NOTICE": 304, "WARNING": 404, "ERROR": 503}
_OSLO_LEVEL = {"NOTICE": "AUDIT"}


def generated_records(count: int) -> list[dict[str, Any]]:
    """``count`` log-like records in three formats (oslo, syslog, apache access) with
    the severity mix above; repetitive, as real logs are. Deterministic."""
    records: list[dict[str, Any]] = []
    for n in range(count):
        level = _MIX[n * 37 % len(_MIX)]
        second = f"{n // 1000 % 60:02d}"
        millis = f"{n % 1000:03d}"
        host = f"web-{n % 4}"
        kind = n % 3
        if kind == 0:
            line = (
                f"2026-11-24 10:{n // 60000 % 60:02d}:{second}.{millis} {1000 + n % 7} "
                f"{_OSLO_LEVEL.get(level, level)} nova.api.openstack.wsgi "
                f"[req-{n * 7919 % 100000:08x} admin admin] GET /v2/servers/{n % 997} "
                f"returned {_HTTP_STATUS[level]} len: {n * 13 % 4096} time: 0.{n % 999:03d}"
            )
            where = {"host": host, "path": "/var/log/nova/nova-api.log"}
        elif kind == 1:
            line = (
                f"<{_SYSLOG_PRI[level]}>Nov 24 10:{n // 60000 % 60:02d}:{second} {host} "
                f"sshd[{2000 + n % 50}]: session {n % 300} for user ops "
                f"from 10.0.{n % 8}.{n % 250} "
                f"{'closed' if level != 'ERROR' else 'failed: connection reset'}"
            )
            where = {"host": host, "path": "/var/log/syslog"}
        else:
            line = (
                f"10.1.{n % 16}.{n * 7 % 250} - - [24/Nov/2026:10:{n // 60000 % 60:02d}:{second} "
                f'+0000] "GET /api/v1/items/{n % 997} HTTP/1.1" {_HTTP_STATUS[level]} '
                f'{n * 31 % 9000} "-" "python-requests/2.31"'
            )
            where = {"host": host, "path": "/var/log/apache2/access.log"}
        records.append({"message": line, **where, "type": "log"})
    return records


def load_records(corpus: Path | None, events: int | None) -> tuple[list[dict[str, Any]], str]:
    """The records to send and a description of their source.

    With ``events``, the corpus is cut or cycled to that many records (and
    that many are generated without a corpus; 20 000 by default).
    """
    if corpus is not None:
        records = corpus_records(corpus)
        source = f"corpus {corpus}"
        if not records:
            raise ValueError(f"no .log, .txt or .json file with data in {corpus}")
    else:
        records = generated_records(events or 20_000)
        source = "generated oslo/syslog/apache lines"
    if events is not None and events != len(records):
        records = [records[n % len(records)] for n in range(events)]
    return records, source


def encode_records(records: list[dict[str, Any]]) -> list[bytes]:
    """Each record as a JSON object without its opening brace: the sender adds
    ``{"bench_sent":<time>,`` in front at send time (a cheap splice)."""
    out = []
    for record in records:
        data = orjson.dumps(record)
        out.append(data[1:] if data != b"{}" else b"}")
    return out
