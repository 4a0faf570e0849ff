"""Serialising batches: NDJSON with orjson, with per-event fallback and counting."""

from __future__ import annotations

import orjson

from logstream.event import Batch
from logstream.metrics import UnitMetrics

_NDJSON = orjson.OPT_APPEND_NEWLINE


def encode_ndjson(batch: Batch, metrics: UnitMetrics) -> tuple[bytes, int]:
    """The batch as NDJSON bytes and the number of events in it.

    An event orjson cannot serialise (a filter put a set or a huge int in it)
    is left out and counted as dropped with reason ``encode_error``; the rest
    of the batch is kept.
    """
    dumps = orjson.dumps
    try:
        return b"".join([dumps(event, option=_NDJSON) for event in batch]), len(batch)
    except (TypeError, orjson.JSONEncodeError):
        pass
    parts = []
    for event in batch:
        try:
            parts.append(dumps(event, option=_NDJSON | orjson.OPT_NON_STR_KEYS))
        except (TypeError, orjson.JSONEncodeError):
            metrics.drop(1, "encode_error")
    return b"".join(parts), len(parts)
