"""Bulk items for Elasticsearch: the action line and the document of each event.

An item is two NDJSON lines, built with orjson once per event and never
re-encoded (a retry, a spool and a dead letter all keep these bytes)::

    {"create":{"_index":"logstash-2026.11.24","_id":"Zr0Kc1bU2V6xkR0c0Qm5"}}
    {"@timestamp":"2026-11-24T10:00:00.000Z","message":"...",...}

Document ids (``document_id``)
    ``auto`` (the default): a BLAKE2b hash of the event's *source position*
    when it has one (``host``, ``log.file.path`` and ``log.offset`` from the
    file and beats inputs, with ``message``), else of the whole document.
    The same event re-sent after a crash, an outage or a resend by Filebeat
    gets the same id, and with ``op_type: create`` Elasticsearch answers 409
    instead of indexing it twice; the sink counts that as delivered. Two
    events identical in every field, ``@timestamp`` included, are one
    document. ``none``: Elasticsearch picks ids (``index`` actions; a
    replay can duplicate). Any other value is a template (``%{[event][id]}``).

Data streams (``data_stream``)
    ``logs-<dataset>-<namespace>`` (type, dataset and namespace may be
    templates), always ``create``; the document gets the ``data_stream``
    fields Elasticsearch expects. Dataset and namespace are lowercased, with
    ``-`` and other characters not allowed in them replaced by ``_``; one
    whose field the event lacks is ``generic`` (dataset) or ``default``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from logstream.event import Event
from logstream.template import compile_index_template, compile_template

_NDJSON: Final = orjson.OPT_APPEND_NEWLINE
_CACHE_MAX: Final = 4096
_NOT_IN_DATASET: Final = re.compile(r"[^a-z0-9_.]")

OpType = Literal["create", "index"]


class DataStreamSettings(BaseModel):
    """Where data-stream documents go: ``<type>-<dataset>-<namespace>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["logs", "metrics", "traces"] = "logs"
    dataset: str = Field(default="generic", description="A name or a template (%{format}).")
    namespace: str = Field(default="default", description="A name or a template.")

    @field_validator("dataset", "namespace")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        compile_template(value)
        return value


class EncodeError(Exception):
    """The event cannot be turned into JSON (a value orjson cannot serialise)."""


class BulkEncoder:
    """Turns events into ``(action line, document line)`` pairs, newlines included."""

    def __init__(
        self, index: str, document_id: str = "auto", data_stream: DataStreamSettings | None = None
    ) -> None:
        none_ok = document_id == "none" and data_stream is None
        self.op_type: OpType = "index" if none_ok else "create"
        self._op = self.op_type.encode()
        self._stream_fields: Callable[[Event], dict[str, str]] | None = None
        if data_stream is not None:
            self._stream_fields = _data_stream_fields(data_stream)
        else:
            self._index_of = compile_index_template(index).render
        self._id_of = _id_function(document_id)
        self._prefixes: dict[str, bytes] = {}

    def encode(self, event: Event) -> tuple[bytes, bytes]:
        """The action and document lines of ``event``; ``EncodeError`` if it has a value
        JSON cannot hold."""
        stream_fields = self._stream_fields
        if stream_fields is None:
            document = _dumps(event)
            index = self._index_of(event)
        else:
            # The data stream's fields name its index: rendered once per event.
            stream = stream_fields(event)
            document = _dumps({**event, "data_stream": stream})
            index = f"{stream['type']}-{stream['dataset']}-{stream['namespace']}"
        prefix = self._prefixes.get(index)
        if prefix is None:
            if len(self._prefixes) >= _CACHE_MAX:
                self._prefixes.clear()
            name = orjson.dumps(index)
            prefix = self._prefixes[index] = b'{"' + self._op + b'":{"_index":' + name
        doc_id = self._id_of(event, document)
        if doc_id is None:
            return prefix + b"}}\n", document
        return prefix + b',"_id":' + orjson.dumps(doc_id) + b"}}\n", document


def action_line(op_type: str, index: str, doc_id: str | None) -> bytes:
    """The action line (with its newline) of one item, as ``BulkEncoder`` writes it."""
    meta = {"_index": index} if doc_id is None else {"_index": index, "_id": doc_id}
    return orjson.dumps({op_type: meta}, option=_NDJSON)


def action_target(action: bytes) -> tuple[str, str | None, str]:
    """``(index, id, op_type)`` of an action line (for logs and dead letters)."""
    parsed = orjson.loads(action)
    op_type, meta = next(iter(parsed.items()))
    return str(meta.get("_index", "")), meta.get("_id"), str(op_type)


def _dumps(event: Event) -> bytes:
    try:
        return orjson.dumps(event, option=_NDJSON)
    except (TypeError, orjson.JSONEncodeError):
        try:
            return orjson.dumps(event, option=_NDJSON | orjson.OPT_NON_STR_KEYS)
        except (TypeError, orjson.JSONEncodeError) as error:
            raise EncodeError(str(error)) from None


def _hash_id(key: bytes) -> str:
    """20 URL-safe characters (120 bits) of BLAKE2b."""
    return base64.urlsafe_b64encode(hashlib.blake2b(key, digest_size=15).digest()).decode()


def source_position(event: Event) -> tuple[Any, Any] | None:
    """``(path, offset)`` when the event says where in a file it was read, else None."""
    log = event.get("log")
    if type(log) is dict:
        offset = log.get("offset")
        if offset is not None:
            file = log.get("file")
            return (file.get("path") if type(file) is dict else None), offset
    offset = event.get("offset")
    if offset is not None:
        return event.get("path") or event.get("source"), offset
    return None


def _auto_id(event: Event, document: bytes) -> str:
    position = source_position(event)
    if position is None:
        return _hash_id(document)
    key = orjson.dumps(
        [event.get("host"), position[0], position[1], event.get("message")],
        option=orjson.OPT_NON_STR_KEYS,
        default=str,
    )
    return _hash_id(key)


def _id_function(document_id: str) -> Callable[[Event, bytes], str | None]:
    if document_id == "auto":
        return _auto_id
    if document_id == "none":
        return lambda event, document: None
    template = compile_template(document_id)
    render = template.render

    def from_template(event: Event, document: bytes) -> str | None:
        value = render(event)
        # A field the event lacks leaves the reference as written: fall back to auto.
        return _auto_id(event, document) if value == document_id or not value else value

    return from_template


def _clean_part(text: str, default: str) -> str:
    if "%{" in text:  # a field the event lacks
        return default
    return _NOT_IN_DATASET.sub("_", text.lower())[:100] or default


def _data_stream_fields(settings: DataStreamSettings) -> Callable[[Event], dict[str, str]]:
    dataset = compile_template(settings.dataset)
    namespace = compile_template(settings.namespace)
    kind = settings.type

    def fields(event: Event) -> dict[str, str]:
        return {
            "type": kind,
            "dataset": _clean_part(dataset.render(event), "generic"),
            "namespace": _clean_part(namespace.render(event), "default"),
        }

    return fields
