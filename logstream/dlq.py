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
"""

from __future__ import annotations

import datetime as dt
import logging
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

    def __init__(self, path: Path, sink: str, max_bytes: int) -> None:
        self.path = path
        self.sink = sink
        self.max_bytes = max_bytes
        self._file: Any = None
        self._size = 0

    def open(self) -> None:
        """Open (create) the file for appending; ``OSError`` if it cannot be."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the sink's life
        self._size = self._file.tell()

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
        line = head[:-1] + b',"document":' + letter.document + b"}\n"
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

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


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
