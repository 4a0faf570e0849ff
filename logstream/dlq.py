"""The dead-letter queue: events Elasticsearch refused for good, kept to be replayed.

An item that fails with 400 or 404 (a mapping conflict, a document Elasticsearch
cannot parse, a missing index with auto-creation off) will fail the same way
however often it is retried. Instead of dropping it, the sink appends it to an
NDJSON file, one record per line::

    {"@timestamp": "2026-11-24T10:00:00.123Z", "sink": "elasticsearch",
     "index": "logstash-2026.11.24", "id": "kq3...", "op_type": "create",
     "status": 400, "error": {"type": "document_parsing_exception", "reason": "..."},
     "document": {...the document as it was sent...}}

After fixing the mapping, ``logstream replay --dlq FILE`` sends the documents
again, to the same index with the same id (so a replay twice creates nothing
twice). The file is bounded by ``max_bytes``; a record that does not fit is
dropped as ``rejected`` and counted, never blocking the sink.

:class:`FilterDeadLetters` keeps the batches a fail-closed filter (redact,
drop) raised on, one file per filter (``filter-<name>.ndjson``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter file."""

    index: str
    id: str | None
    op_type: str
    status: int
    error: Any
    document: bytes  # the JSON document as it was sent (no newline)


class DeadLetterQueue:
    """Appends dead letters to one NDJSON file, up to ``max_bytes``."""

    def __init__(self, path: Path, sink: str, max_bytes: int, mode: int = 0o644) -> None:
        self.path = path
        self.sink = sink
        self.max_bytes = max_bytes
        self.mode = mode  # permissions of a new file
        self._file: Any = None
        self._size = 0

    def open(self) -> None:
        """Open (create) the file for appending; ``OSError`` if it cannot be."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self.mode)
        self._file = os.fdopen(fd, "ab")
        self._size = self._file.seek(0, os.SEEK_END)

    def add_line(self, line: bytes) -> bool:
        """Append one complete NDJSON line; False when the file is full or cannot be written."""
        if self._file is None:
            self.open()
        if self._size + len(line) > self.max_bytes:
            return False
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as error:
            log.error("dead-letter queue %s: cannot write: %s", self.path, error)
            return False
        self._size += len(line)
        return True

    def add(self, letter: DeadLetter) -> bool:
        """Append ``letter``; False when the file is full or cannot be written."""
        if self._file is None:
            self.open()
        head = orjson.dumps(
            {
                "@timestamp": _now(),
                "sink": self.sink,
                "index": letter.index,
                "id": letter.id,
                "op_type": letter.op_type,
                "status": letter.status,
                "error": letter.error,
            }
        )
        # The document is spliced in as the bytes that were sent: no re-encoding.
        return self.add_line(head[:-1] + b',"document":' + letter.document + b"}\n")

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


# Cap on one filter's dead-letter file; what does not fit is logged (and still counted).
FILTER_DEAD_LETTERS_MAX_BYTES = 1 << 30


class FilterDeadLetters:
    """The batches fail-closed filters raised on, one file per filter.

    ``<directory>/filter-<name>.ndjson``, one record per event::

        {"@timestamp": "...", "filter": "redact", "error": {"type": "KeyError",
         "reason": "..."}, "event": {...the event as the filter was given it...}}

    The events are as they were *before* the filter ran: for ``redact`` they may
    hold the very secrets it was to mask, so the files are created readable by
    their owner only (0600). To send them again once the filter is fixed, feed
    the ``event`` of each line to an input, e.g. ``jq -c .event FILE | curl
    --data-binary @- http://HOST:8080/`` against an ``http`` input.
    """

    def __init__(self, directory: Path, max_bytes: int = FILTER_DEAD_LETTERS_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._files: dict[str, DeadLetterQueue] = {}

    def path(self, filter_name: str) -> Path:
        return self.directory / f"filter-{filter_name}.ndjson"

    def add(self, filter_name: str, events: list[dict[str, Any]], error: BaseException) -> int:
        """Append one record per event; return how many were written (the rest is logged)."""
        dlq = self._files.get(filter_name)
        if dlq is None:
            dlq = DeadLetterQueue(self.path(filter_name), filter_name, self.max_bytes, 0o600)
            self._files[filter_name] = dlq
        head = orjson.dumps(
            {
                "@timestamp": _now(),
                "filter": filter_name,
                "error": {"type": type(error).__name__, "reason": str(error)[:1000]},
            }
        )[:-1]
        written = 0
        try:
            for event in events:
                body = orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS)
                if not dlq.add_line(head + b',"event":' + body + b"}\n"):
                    break
                written += 1
        except (OSError, TypeError) as failure:
            log.error("dead-letter file %s: cannot write: %s", dlq.path, failure)
        if written < len(events):
            log.error(
                "dead-letter file %s is full or unwritable: %d events of filter %s not kept",
                dlq.path, len(events) - written, filter_name,
            )  # fmt: skip
        return written

    def close(self) -> None:
        for dlq in self._files.values():
            dlq.close()
        self._files.clear()


def read_dead_letters(path: Path) -> Iterator[DeadLetter | str]:
    """The records of a dead-letter file, in order; a line that is not a record
    comes out as a string saying what is wrong with it (line number and why)."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                document = record["document"]
                index = record["index"]
                if not isinstance(document, dict) or not isinstance(index, str) or not index:
                    raise ValueError("document must be an object and index a name")
                yield DeadLetter(
                    index=index,
                    id=record.get("id") if isinstance(record.get("id"), str) else None,
                    op_type=str(record.get("op_type") or "create"),
                    status=int(record.get("status") or 0),
                    error=record.get("error"),
                    document=orjson.dumps(document),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                yield f"{path}:{number}: not a dead-letter record ({error})"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
