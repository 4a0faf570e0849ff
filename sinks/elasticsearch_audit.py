"""Are the documents an Elasticsearch sink delivered in the server? ``_mget`` by id.

The sink's document ids are deterministic (:mod:`logstream.bulk`), so the
``(index, id)`` of every event can be computed again from the events alone
(the file sink's output, a copy of the source): :func:`targets` encodes them
with the sink's own settings, and :func:`audit` asks the server for each,
``_mget`` in chunks with ``_source=false``, through the sink's client (its
hosts, credentials and TLS). What the server does not have is reported by
position in the input, as ranges (:func:`ranges`): a loss of a whole bulk
request shows as one range.

``benchmarks/audit.py`` is the command line; ``benchmarks/soak.py`` runs it
after a soak.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from logstream.bulk import EncodeError, action_target
from logstream.event import Event

if TYPE_CHECKING:
    from logstream.sinks.elasticsearch import ElasticsearchSink

Target = tuple[str, str]  # (index, document id)
_MGET = "/_mget?_source=false&filter_path=docs.found,docs.error.type"


@dataclass
class AuditReport:
    """What the server answered for the documents asked about."""

    checked: int = 0
    found: int = 0
    missing: list[int] = field(default_factory=list)  # positions in the targets, ascending
    errors: Counter[str] = field(default_factory=Counter)  # position-less: error type -> count
    error_positions: list[int] = field(default_factory=list)
    # Positions whose (index, id) an earlier position already has: two different events
    # with one id are stored once (the second gets 409 on create, counted delivered as
    # already_indexed). Only a real loss when the events were distinct.
    shared_ids: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every document asked about is there, and every answer was read."""
        return not self.missing and not self.error_positions


def targets(sink: ElasticsearchSink, events: Iterable[Event]) -> list[Target | None]:
    """The ``(index, id)`` the sink gives each event (None: it cannot encode it).
    ``ValueError`` for a sink whose server picks the ids (``document_id: none``)."""
    if sink.encoder.op_type != "create":
        raise ValueError(
            f"sink {sink.name}: document_id none lets the server pick ids; nothing to look up"
        )
    encode = sink.encoder.encode
    out: list[Target | None] = []
    for event in events:
        try:
            action, _ = encode(event)
        except EncodeError:
            out.append(None)
            continue
        index, doc_id, _ = action_target(action)
        out.append(None if doc_id is None else (index, doc_id))
    return out


async def audit(
    sink: ElasticsearchSink, wanted: Sequence[Target | None], *, chunk: int = 1000
) -> AuditReport:
    """Ask the server (through ``sink``'s client; the sink is started) for each target,
    ``chunk`` ids per ``_mget``. ``None`` targets are skipped."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, value: {chunk}")
    report = AuditReport()
    positions: list[int] = []
    first: set[Target] = set()
    for i, target in enumerate(wanted):
        if target is None:
            continue
        if target in first:
            report.shared_ids.append(i)
            continue
        first.add(target)
        positions.append(i)
    for start in range(0, len(positions), chunk):
        part = positions[start : start + chunk]
        docs = [{"_index": wanted[i][0], "_id": wanted[i][1]} for i in part]  # type: ignore[index]
        body = orjson.dumps({"docs": docs})
        status, answer = await sink._request("POST", _MGET, body)
        results = answer.get("docs") if isinstance(answer, dict) else None
        if not 200 <= status < 300 or not isinstance(results, list) or len(results) != len(part):
            raise RuntimeError(f"_mget answered HTTP {status}: {str(answer)[:300]}")
        report.checked += len(part)
        for position, result in zip(part, results, strict=True):
            _count(report, position, result)
    return report


def _count(report: AuditReport, position: int, result: Any) -> None:
    if not isinstance(result, dict):
        report.errors["unreadable answer"] += 1
        report.error_positions.append(position)
    elif result.get("found") is True:
        report.found += 1
    elif isinstance(result.get("error"), dict):
        kind = str(result["error"].get("type", "?"))
        if kind == "index_not_found_exception":  # the whole index is missing: so is the doc
            report.missing.append(position)
        else:
            report.errors[kind] += 1
            report.error_positions.append(position)
    else:
        report.missing.append(position)


def ranges(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted integers as inclusive ``(first, last)`` runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for value in sorted(positions):
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        elif not runs or value != runs[-1][1]:
            runs.append((value, value))
    return runs


def describe_ranges(runs: Sequence[tuple[int, int]], limit: int = 20) -> str:
    """``"5-9, 12"`` for [(5, 9), (12, 12)], at most ``limit`` runs shown."""
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    if len(runs) > limit:
        text += f", ... ({len(runs) - limit} more ranges)"
    return text
