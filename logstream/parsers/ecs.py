"""The default field names and their Elastic Common Schema (ECS) counterparts.

With ``fields: ecs`` the ``parse`` filter writes nested objects, as ECS
documents are shaped (``{"log": {"level": "ERROR"}}``, which Elasticsearch
maps exactly as the dotted name ``log.level``):

=====================  ===================================
default                ECS
=====================  ===================================
``level``              ``log.level`` (the one scale's name) and ``event.severity`` (its number)
``level_original``     ``log.level_original`` (not in ECS)
``format``             ``event.dataset``
``host``               ``host.name``
``program``            ``process.name``
``pid``                ``process.pid``
``thread_id``          ``process.thread.id``
``logger``             ``log.logger``
``request_id``         ``http.request.id``
``user_id``            ``user.id``
``project_id``         ``cloud.project.id``
``instance_id``        ``cloud.instance.id``
``function``           ``log.origin.function``
``file``, ``line``     ``log.origin.file.name``, ``log.origin.file.line``
``syslog_facility``    ``log.syslog.facility.code``
``syslog_severity``    ``log.syslog.severity.code``
``syslog_msgid``       ``log.syslog.msgid``
``syslog_sd``          ``log.syslog.structured_data``
``syslog_procid``      ``log.syslog.procid`` (a PROCID that is not a number)
``vhost``              ``url.domain``
``vhost_port``         ``url.port``
``forwarded_for``      ``network.forwarded_for`` (not in ECS: the X-Forwarded-For list)
``error_message``      ``error.message`` (Apache's APR error)
``client``             ``source.address``
``user``               ``user.name``
``method``             ``http.request.method``
``url``                ``url.original``
``http_version``       ``http.version``
``status``             ``http.response.status_code``
``bytes``              ``http.response.body.bytes``
``referrer``           ``http.request.referrer``
``user_agent``         ``user_agent.original``
``error_code``         ``error.code``
``command``            ``process.command_line``
``original``           ``event.original``
``ansible_<x>``        ``ansible.<x>`` (not in ECS)
``@timestamp``, ``message``  unchanged
=====================  ===================================

A value in the way that is not an object is replaced -- except a string
``host`` (the Logstash convention, set by the tcp input), which becomes
``host.name`` first, so the source's name survives when the line has none.
"""

from __future__ import annotations

from typing import Any, Final

from logstream.event import Event
from logstream.severity import Severity

Path = tuple[str, ...]

ECS: Final[dict[str, Path]] = {
    "@timestamp": ("@timestamp",),
    "message": ("message",),
    "level": ("log", "level"),
    "level_original": ("log", "level_original"),
    "format": ("event", "dataset"),
    "host": ("host", "name"),
    "program": ("process", "name"),
    "pid": ("process", "pid"),
    "thread_id": ("process", "thread", "id"),
    "logger": ("log", "logger"),
    "request_id": ("http", "request", "id"),
    "user_id": ("user", "id"),
    "project_id": ("cloud", "project", "id"),
    "instance_id": ("cloud", "instance", "id"),
    "function": ("log", "origin", "function"),
    "file": ("log", "origin", "file", "name"),
    "line": ("log", "origin", "file", "line"),
    "syslog_facility": ("log", "syslog", "facility", "code"),
    "syslog_severity": ("log", "syslog", "severity", "code"),
    "syslog_msgid": ("log", "syslog", "msgid"),
    "syslog_sd": ("log", "syslog", "structured_data"),
    "syslog_procid": ("log", "syslog", "procid"),
    "vhost": ("url", "domain"),
    "vhost_port": ("url", "port"),
    "forwarded_for": ("network", "forwarded_for"),
    "error_message": ("error", "message"),
    "client": ("source", "address"),
    "user": ("user", "name"),
    "method": ("http", "request", "method"),
    "url": ("url", "original"),
    "http_version": ("http", "version"),
    "status": ("http", "response", "status_code"),
    "bytes": ("http", "response", "body", "bytes"),
    "referrer": ("http", "request", "referrer"),
    "user_agent": ("user_agent", "original"),
    "error_code": ("error", "code"),
    "command": ("process", "command_line"),
    "original": ("event", "original"),
}
_SEVERITY: Final = {severity.name: severity.value for severity in Severity}
_SEVERITY_PATH: Final = ("event", "severity")


def ecs_path(name: str) -> Path:
    """The ECS path of a default field name (``ansible_x`` -> ``ansible.x``; others as they are)."""
    path = ECS.get(name)
    if path is not None:
        return path
    if name.startswith("ansible_") and len(name) > 8:
        return ("ansible", name[8:])
    return (name,)


def _put(event: Event, path: Path, value: Any) -> None:
    target = event
    for part in path[:-1]:
        inner = target.get(part)
        if type(inner) is not dict:
            inner = target[part] = {}
        target = inner
    target[path[-1]] = value


def apply_ecs(event: Event, fields: dict[str, Any]) -> None:
    """Write parsed ``fields`` (default names) into ``event`` under their ECS names."""
    host = event.get("host")
    if type(host) is str:
        event["host"] = {"name": host}
    paths = ECS
    for name, value in fields.items():
        path = paths.get(name) or ecs_path(name)
        depth = len(path)
        if depth == 1:
            event[path[0]] = value
        elif depth == 2:
            top = path[0]
            inner = event.get(top)
            if type(inner) is not dict:
                inner = event[top] = {}
            inner[path[1]] = value
        else:
            _put(event, path, value)
    level = fields.get("level")
    if level is not None:
        _put(event, _SEVERITY_PATH, _SEVERITY.get(level, 0))


def set_original_ecs(event: Event, text: str) -> None:
    _put(event, ECS["original"], text)
