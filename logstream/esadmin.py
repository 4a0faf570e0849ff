"""Talking to Elasticsearch or OpenSearch about itself: who it is, index templates.

Used by the ``elasticsearch`` sink at start (a connection check and the
optional template install) and by ``logstream check --connect``. Every call
goes through the sink's own request function, so it has the sink's auth, TLS
and plain media types (OpenSearch answers 406 to the Elasticsearch client's
``compatible-with`` types).

The template (``template:`` on the sink) maps the fields the ``parse`` filter
writes, in its default or ECS shape: ``@timestamp`` a date, ``message`` full
text, numbers as numbers, and every other string a ``keyword`` (exact values
for filters and aggregations, ``ignore_above: 1024``), as Logstash's own
template does. Its pattern comes from the sink's index (``logstash-*`` for
``logstash-%{+YYYY.MM.dd}``) or data stream (``logs-<dataset>-*``), with
priority 200 so that it wins over Elasticsearch's built-in ``logs`` template.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from logstream.bulk import DataStreamSettings

Flavor = Literal["elasticsearch", "opensearch"]


class Request(Protocol):
    def __call__(
        self, method: str, path: str, body: bytes | None = None, *, ndjson: bool = False
    ) -> Awaitable[tuple[int, Any]]: ...


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /`` said."""

    flavor: Flavor
    version: str
    name: str

    def describe(self) -> str:
        kind = "OpenSearch" if self.flavor == "opensearch" else "Elasticsearch"
        return f"{kind} {self.version} ({self.name})"


class TemplateSettings(BaseModel):
    """An index template installed at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="logstream", description="The template's name.")
    fields: Literal["default", "ecs"] = Field(
        default="default", description="The parse filter's field shape to map."
    )
    overwrite: bool = Field(
        default=False, description="Replace a template of that name already there."
    )
    priority: int = Field(default=200, ge=0, description="Wins over lower-priority templates.")
    pattern: str | None = Field(
        default=None, description="Index pattern (default: from index or data_stream)."
    )


async def server_info(request: Request) -> ServerInfo:
    """``ConnectionError`` when no node answers (or answers an error),
    ``PermissionError`` when the credentials are refused."""
    from elastic_transport import TransportError  # the client's, imported when used

    try:
        status, body = await request("GET", "/")
    except TransportError as error:
        raise ConnectionError(f"no answer: {type(error).__name__}: {error.message}") from None
    if status in (401, 403):
        raise PermissionError(f"credentials refused (HTTP {status})")
    if status != 200 or not isinstance(body, dict):
        raise ConnectionError(f"GET / answered HTTP {status}: {str(body)[:200]}")
    found = body.get("version")
    version: dict[str, Any] = found if isinstance(found, dict) else {}
    distribution = str(version.get("distribution", "elasticsearch")).lower()
    flavor: Flavor = "opensearch" if distribution == "opensearch" else "elasticsearch"
    return ServerInfo(flavor, str(version.get("number", "?")), str(body.get("name", "?")))


def template_pattern(index: str, data_stream: DataStreamSettings | None) -> str:
    """The pattern of the indices a sink writes: its constant prefix and ``*``."""
    if data_stream is not None:
        dataset = data_stream.dataset if "%{" not in data_stream.dataset else "*"
        return f"{data_stream.type}-{dataset}-*"
    prefix = index.split("%{", 1)[0]
    return prefix + "*" if prefix != index else index


_KEYWORD = {"type": "keyword", "ignore_above": 1024}

_DEFAULT_FIELDS: dict[str, Any] = {
    "@timestamp": {"type": "date"},
    "message": {"type": "text"},
    "pid": {"type": "long"},
    "line": {"type": "long"},
    "status": {"type": "long"},
    "bytes": {"type": "long"},
    "syslog_facility": {"type": "integer"},
    "syslog_severity": {"type": "integer"},
    "sample_rate": {"type": "float"},
    "syslog_sd": {"type": "object", "enabled": False},
}

_ECS_FIELDS: dict[str, Any] = {
    "@timestamp": {"type": "date"},
    "message": {"type": "text"},
    "event": {"properties": {"severity": {"type": "long"}, "original": {"type": "text"}}},
    "process": {"properties": {"pid": {"type": "long"}}},
    "log": {
        "properties": {
            "origin": {"properties": {"file": {"properties": {"line": {"type": "long"}}}}},
            "syslog": {
                "properties": {
                    "facility": {"properties": {"code": {"type": "integer"}}},
                    "severity": {"properties": {"code": {"type": "integer"}}},
                    "structured_data": {"type": "object", "enabled": False},
                }
            },
        }
    },
    "http": {
        "properties": {
            "response": {
                "properties": {
                    "status_code": {"type": "long"},
                    "body": {"properties": {"bytes": {"type": "long"}}},
                }
            }
        }
    },
}


def template_body(
    settings: TemplateSettings, index: str, data_stream: DataStreamSettings | None
) -> dict[str, Any]:
    properties = _ECS_FIELDS if settings.fields == "ecs" else _DEFAULT_FIELDS
    body: dict[str, Any] = {
        "index_patterns": [settings.pattern or template_pattern(index, data_stream)],
        "priority": settings.priority,
        "template": {
            "mappings": {
                "dynamic_templates": [
                    {"strings_as_keywords": {"match_mapping_type": "string", "mapping": _KEYWORD}}
                ],
                "properties": properties,
            }
        },
        "_meta": {"managed_by": "logstream", "fields": settings.fields},
    }
    if data_stream is not None:
        body["data_stream"] = {}
    return body


async def install_template(
    request: Request,
    settings: TemplateSettings,
    index: str,
    data_stream: DataStreamSettings | None,
) -> str:
    """Install the template unless one of its name is there (and ``overwrite`` is off).

    Returns what was done; ``ConnectionError`` when the server did not take it.
    """
    from elastic_transport import TransportError

    path = f"/_index_template/{settings.name}"
    try:
        if not settings.overwrite:
            status, _ = await request("GET", path)
            if status == 200:
                return f"index template {settings.name} already there (overwrite: false)"
        body = orjson.dumps(template_body(settings, index, data_stream))
        status, answer = await request("PUT", path, body)
    except TransportError as error:
        raise ConnectionError(f"{type(error).__name__}: {error.message}") from None
    if status != 200:
        raise ConnectionError(f"PUT {path} answered HTTP {status}: {str(answer)[:300]}")
    pattern = settings.pattern or template_pattern(index, data_stream)
    return f"index template {settings.name} installed for {pattern}"
