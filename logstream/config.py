"""The YAML configuration: loading, ``${ENV}`` substitution, validation, building.

A config names its units by ``type``; each type's settings are validated by
that unit's own ``*Config`` model (unknown keys rejected). Every error names
the key path and the bad value, for example::

    sinks[1] (mqtt).qos: Input should be 0 or 1 (value: 2)
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import types
import typing
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from logstream.filters.drop import DropFilterConfig
from logstream.filters.multiline import MultilineFilterConfig
from logstream.filters.mutate import MutateFilterConfig
from logstream.filters.parse import ParseFilterConfig
from logstream.filters.redact import RedactFilterConfig
from logstream.filters.regex import RegexFilterConfig
from logstream.filters.route import RouteFilterConfig
from logstream.filters.sample import SampleFilterConfig
from logstream.inputs.beats import BeatsInputConfig
from logstream.inputs.file import FileInputConfig
from logstream.inputs.http import HttpInputConfig
from logstream.inputs.nats import NatsInputConfig
from logstream.inputs.syslog import SyslogInputConfig
from logstream.inputs.tcp import TcpInputConfig
from logstream.inputs.udp import UdpInputConfig
from logstream.listeners import listeners, overlaps
from logstream.monitor import MonitorSettings
from logstream.netaddr import parse_listen
from logstream.pipeline import Pipeline, SinkRunner, SinkSettings
from logstream.queue import DiskQueue, QueueConfig
from logstream.sinks.elasticsearch import ElasticsearchSinkConfig
from logstream.sinks.file import FileSinkConfig
from logstream.sinks.mqtt import MqttSinkConfig
from logstream.sinks.nats import NatsSinkConfig
from logstream.sinks.stdout import StdoutSinkConfig
from logstream.units import BuildContext, Filter, FilterConfig, SinkConfig, UnitConfig

# The known unit types. A new unit is added to its union here.
AnyInput = Annotated[
    TcpInputConfig
    | UdpInputConfig
    | HttpInputConfig
    | SyslogInputConfig
    | BeatsInputConfig
    | FileInputConfig
    | NatsInputConfig,
    Field(discriminator="type"),
]
AnyFilter = Annotated[
    MutateFilterConfig
    | RegexFilterConfig
    | DropFilterConfig
    | RouteFilterConfig
    | RedactFilterConfig
    | SampleFilterConfig
    | ParseFilterConfig
    | MultilineFilterConfig,
    Field(discriminator="type"),
]
AnySink = Annotated[
    ElasticsearchSinkConfig | MqttSinkConfig | FileSinkConfig | StdoutSinkConfig | NatsSinkConfig,
    Field(discriminator="type"),
]


KINDS = ("input", "filter", "sink")


class ConfigError(Exception):
    """A configuration that cannot work; the message says which key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineSettings(_Strict):
    ingest_max_events: int = Field(
        default=8_192, ge=1, description="Events the ingest buffer holds before inputs pause."
    )
    filter_batch_max_events: int = Field(
        default=1_024,
        ge=1,
        description="Events the filter task takes per batch (small batches stay in CPU cache).",
    )
    tick_secs: float = Field(default=0.1, gt=0, description="How often time-driven filters run.")
    shutdown_timeout_secs: float = Field(
        default=10.0, gt=0, description="How long shutdown may spend flushing sinks."
    )
    workers: int | Literal["auto"] = Field(
        default=1,
        description="Worker processes running this pipeline behind shared listening ports "
        "(SO_REUSEPORT); auto: one per CPU.",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _valid_workers(cls, value: Any) -> Any:
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return value
        raise ValueError("must be a positive integer or auto")

    def worker_count(self) -> int:
        """How many worker processes run: ``workers``, or the CPUs this process may use."""
        if self.workers != "auto":
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)

    queue: QueueConfig = Field(
        default_factory=QueueConfig,
        description="memory, or disk: events are on disk before they count as accepted.",
    )


class Config(_Strict):
    inputs: list[AnyInput] = Field(min_length=1)
    filters: list[AnyFilter] = Field(default_factory=list)
    sinks: list[AnySink] = Field(min_length=1)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    state_dir: Path = Field(
        default=Path(".logstream"), description="Where logstream keeps state and local servers."
    )

    def unit_names(self) -> dict[int, str]:
        """The name of each unit (by ``id()`` of its config): its ``id``, else its type,
        numbered when several units share a type."""
        units: list[UnitConfig] = [*self.inputs, *self.filters, *self.sinks]
        explicit = Counter(unit.id for unit in units if unit.id)
        duplicated = [name for name, count in explicit.items() if count > 1]
        if duplicated:
            raise ConfigError(f"unit ids must be unique, repeated: {', '.join(duplicated)}")
        by_type = Counter(f"{unit.kind}:{unit.type}" for unit in units if not unit.id)
        seen: Counter[str] = Counter()
        names: dict[int, str] = {}
        for unit in units:
            if unit.id:
                names[id(unit)] = unit.id
                continue
            key = f"{unit.kind}:{unit.type}"
            seen[key] += 1
            name = unit.type if by_type[key] == 1 else f"{unit.type}_{seen[key]}"
            if any(other != unit.kind and f"{other}:{unit.type}" in by_type for other in KINDS):
                name = f"{name}_{unit.kind}"  # a file input and a file sink: file_input, file_sink
            while name in explicit:
                name += "_"
            names[id(unit)] = name
        return names


WORKER = "{worker}"


def _per_worker_paths(config: Config) -> list[tuple[str, str | None]]:
    """Each (key path, value) naming a file or directory that every worker would
    share unless it contains ``{worker}``."""
    found: list[tuple[str, str | None]] = []
    for i, sink in enumerate(config.sinks):
        where = f"sinks[{i}] ({sink.type})"
        if isinstance(sink, FileSinkConfig):
            found.append((f"{where}.path", str(sink.path)))
        elif isinstance(sink, MqttSinkConfig) and sink.client_id is not None:
            found.append((f"{where}.client_id", sink.client_id))
        elif isinstance(sink, ElasticsearchSinkConfig):
            if sink.spool.enabled and sink.spool.path is not None:
                found.append((f"{where}.spool.path", str(sink.spool.path)))
            if sink.dead_letters.enabled and sink.dead_letters.path is not None:
                found.append((f"{where}.dead_letters.path", str(sink.dead_letters.path)))
    for i, unit in enumerate(config.inputs):
        if isinstance(unit, FileInputConfig) and unit.checkpoint_file is not None:
            found.append((f"inputs[{i}] (file).checkpoint_file", str(unit.checkpoint_file)))
    queue = config.pipeline.queue
    if queue.type == "disk" and queue.path is not None:
        found.append(("pipeline.queue.path", str(queue.path)))
    return found


def check_workers(config: Config) -> None:
    """What ``workers > 1`` needs: SO_REUSEPORT, fixed ports, one file per worker."""
    count = config.pipeline.worker_count()
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError(
            f"pipeline.workers: {count} workers need SO_REUSEPORT, which this platform "
            "lacks; use workers: 1"
        )
    for i, unit in enumerate(config.inputs):
        listen = getattr(unit, "listen", None)
        if isinstance(listen, str) and parse_listen(listen)[1] == 0:
            raise ValueError(
                f"inputs[{i}] ({unit.type}).listen: port 0 would give each of the {count} "
                f"workers a port of its own; give a fixed port (value: {listen})"
            )
    monitor = config.monitor
    if monitor.enabled and parse_listen(monitor.listen)[1] == 0:
        raise ValueError(
            f"monitor.listen: every worker serves the monitor address, and port 0 would "
            f"give each of the {count} workers a port of its own; give a fixed port "
            f"(value: {monitor.listen})"
        )
    for key, value in _per_worker_paths(config):
        if value is not None and WORKER not in value:
            raise ValueError(
                f"{key}: with pipeline.workers {count}, each worker needs its own; "
                f"put {WORKER} in it (value: {value})"
            )


def for_worker(data: Any, worker: int) -> Any:
    """The raw config as worker ``worker`` runs it: ``{worker}`` replaced by its index
    in file sink paths, MQTT client ids, spool, dead-letter, checkpoint and disk queue
    paths."""
    if not isinstance(data, dict):
        return data
    index = str(worker)

    def sub(unit: Any, *keys: str) -> Any:
        if not isinstance(unit, dict) or len(keys) == 0:
            return unit
        key, rest = keys[0], keys[1:]
        value = unit.get(key)
        if rest:
            return {**unit, key: sub(value, *rest)} if isinstance(value, dict) else unit
        if isinstance(value, str) and WORKER in value:
            return {**unit, key: value.replace(WORKER, index)}
        return unit

    sinks = []
    for sink in data.get("sinks") or []:
        if isinstance(sink, dict):
            kind = sink.get("type")
            if kind == "file":
                sink = sub(sink, "path")
            elif kind == "mqtt":
                sink = sub(sink, "client_id")
            elif kind == "elasticsearch":
                sink = sub(sub(sink, "spool", "path"), "dead_letters", "path")
        sinks.append(sink)
    inputs = [
        sub(unit, "checkpoint_file")
        if isinstance(unit, dict) and unit.get("type") == "file"
        else unit
        for unit in data.get("inputs") or []
    ]
    out = dict(data)
    if "sinks" in data:
        out["sinks"] = sinks
    if "inputs" in data:
        out["inputs"] = inputs
    if isinstance(data.get("pipeline"), dict):
        out["pipeline"] = sub(data["pipeline"], "queue", "path")
    return out


_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, env: dict[str, str] | os._Environ[str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or 'config'}: environment variable {name} is not set")

        return _ENV.sub(replace, value)
    if isinstance(value, dict):
        return {
            k: substitute_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _format_location(loc: tuple[int | str, ...], data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and part not in node and node.get("type") == part:
            out += f" ({part})"  # the union tag pydantic adds to the path
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


# Never echo a credential in an error: values of these keys, and passwords in URLs.
_SECRET_KEYS = frozenset({"password", "token", "api_key", "secret"})
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)[^@\s'\"]*@")


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model that holds the key at ``loc`` (a pydantic error location)."""
    node: Any = Config
    for part in loc[:-1]:
        node = _unwrap(node, part)
        if isinstance(node, type) and issubclass(node, BaseModel):
            if isinstance(part, str) and part in node.model_fields:
                node = node.model_fields[part].annotation
                continue
            if isinstance(part, str):  # the union tag pydantic adds: already chosen
                continue
            return None
        if isinstance(part, int) and typing.get_origin(node) is list:
            node = typing.get_args(node)[0]
            continue
        return None
    node = _unwrap(node, None)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(node: Any, tag: int | str | None) -> Any:
    """``node`` without ``Annotated``, ``None`` and, for a tagged union, the other members."""
    while True:
        origin = typing.get_origin(node)
        if origin is typing.Annotated:
            node = typing.get_args(node)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(node) if arg is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tagged = [m for m in models if _type_tag(m) == tag]
            if tagged:
                return tagged[0]
            if len(members) == 1 or len(models) == 1:
                node = models[0] if models else members[0]
                continue
            return node
        return node


def _type_tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None or typing.get_origin(field.annotation) is not Literal:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if len(args) == 1 else None


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    model = _model_at(loc)
    key = str(loc[-1])
    if model is None:
        return "unknown key"
    return "unknown key" + did_you_mean(key, [k for k in model.model_fields if k != "type"])


def _format_errors(error: ValidationError, data: Any) -> str:
    lines = []
    for item in error.errors(include_url=False):
        where = _format_location(tuple(item["loc"]), data) or "config"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = _unknown_key(tuple(item["loc"]))
        elif item["type"] == "union_tag_invalid":
            expected = str(item.get("ctx", {}).get("expected_tags", ""))
            tags = [tag.strip(" '") for tag in expected.split(",")]
            message += did_you_mean(str(item.get("ctx", {}).get("tag", "")), tags)
        elif item["type"] == "missing":
            message = "required key is missing"
        value = item.get("input")
        shown = (
            "" if item["type"] == "missing" or isinstance(value, dict) else f" (value: {value!r})"
        )
        if shown and (_SECRET_KEYS & {str(part) for part in item["loc"]}):
            shown = " (value: ***)"
        shown = _URL_PASSWORD.sub(r"\1***@", shown)
        lines.append(f"{where}: {message}{shown}")
    return "\n".join(lines)


# A sink may name ``local`` instead of a server: `logstream run` then starts one
# (mosquitto, noida-db, nats-server) and puts its URL there (for mqtt also an entry of
# ``urls``: ``urls: [local, "mqtt://other:1883"]``). Until then, these stand in.
LOCAL = "local"
LOCAL_PLACEHOLDERS = {
    "mqtt": "mqtt://127.0.0.1:1883",
    "elasticsearch": "http://127.0.0.1:9200",
    "nats": "nats://127.0.0.1:4222",
}


def _is_local_nats(unit: Any) -> bool:
    """A nats input or sink with ``servers: [local]`` (or ``servers: local``)."""
    return (
        isinstance(unit, dict)
        and unit.get("type") == "nats"
        and unit.get("servers") in (LOCAL, [LOCAL])
    )


def _is_local_mqtt(sink: dict[str, Any]) -> bool:
    """An mqtt sink with ``url: local``, or ``local`` among its ``urls`` (a URL or an
    entry's ``url``)."""
    if sink.get("type") != "mqtt":
        return False
    urls = sink.get("urls")
    entries = urls if isinstance(urls, list) else []
    return sink.get("url") == LOCAL or any(_local_entry(entry) for entry in entries)


def _local_entry(entry: Any) -> bool:
    return entry == LOCAL or (isinstance(entry, dict) and entry.get("url") == LOCAL)


def _local_mqtt(sink: dict[str, Any], url: str) -> dict[str, Any]:
    """``local`` in ``url`` or ``urls`` replaced by the local broker's URL."""
    if sink.get("url") == LOCAL:
        return {**sink, "url": url}
    entries = [
        url if entry == LOCAL else {**entry, "url": url} if _local_entry(entry) else entry
        for entry in sink["urls"]
    ]
    return {**sink, "urls": entries}


def local_needs(data: Any) -> set[str]:
    """Which local servers (``mqtt``, ``elasticsearch``) the raw config asks for."""
    needs = set()
    for sink in data.get("sinks") or [] if isinstance(data, dict) else []:
        if not isinstance(sink, dict):
            continue
        if _is_local_mqtt(sink):
            needs.add("mqtt")
        if sink.get("type") == "elasticsearch" and sink.get("hosts") in (LOCAL, [LOCAL]):
            needs.add("elasticsearch")
    if isinstance(data, dict):
        units = [*(data.get("inputs") or []), *(data.get("sinks") or [])]
        if any(_is_local_nats(unit) for unit in units):
            needs.add("nats")
    return needs


def local_sinks(data: Any) -> dict[int, str]:
    """The sinks of the raw config that name ``local``: index -> the server ``run`` starts."""
    servers = {"mqtt": "mosquitto", "elasticsearch": "noida-db", "nats": "nats-server"}
    found: dict[int, str] = {}
    for i, sink in enumerate(data.get("sinks") or [] if isinstance(data, dict) else []):
        if isinstance(sink, dict) and local_needs({"sinks": [sink]}):
            found[i] = servers.get(str(sink.get("type")), "a local server")
    return found


def _resolve_local(data: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
    sinks = []
    for sink in data.get("sinks") or []:
        if isinstance(sink, dict):
            if _is_local_mqtt(sink):
                sink = _local_mqtt(sink, urls["mqtt"])
                if "mqtt_websockets" in urls and not sink.get("websockets_url"):
                    sink["websockets_url"] = urls["mqtt_websockets"]  # for the /tail page
            elif sink.get("type") == "elasticsearch" and sink.get("hosts") in (LOCAL, [LOCAL]):
                sink = {**sink, "hosts": [urls["elasticsearch"]]}
        sinks.append(sink)
    data = {**data, "sinks": sinks} if "sinks" in data else data
    if isinstance(data.get("inputs"), list):
        data = {**data, "inputs": [_local_nats(unit, urls) for unit in data["inputs"]]}
    if isinstance(data.get("sinks"), list):
        data = {**data, "sinks": [_local_nats(unit, urls) for unit in data["sinks"]]}
    return data


def _local_nats(unit: Any, urls: dict[str, str]) -> Any:
    if _is_local_nats(unit) and "nats" in urls:
        return {**unit, "servers": [urls["nats"]]}
    return unit


def parse_config(
    data: Any,
    env: dict[str, str] | None = None,
    local_urls: dict[str, str] | None = None,
    worker: int | None = 0,
) -> Config:
    """Validate an already-loaded YAML document. Raises :class:`ConfigError`.

    ``local_urls`` replaces sinks set to ``local`` (default: placeholders, for checking).
    The config is checked as written (``pipeline.workers`` and what it needs), then
    returned as worker ``worker`` runs it (``{worker}`` in paths replaced), or as
    written when ``worker`` is None.
    """
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping with inputs and sinks")
    data = substitute_env(data, os.environ if env is None else env)
    data = _resolve_local(data, local_urls or LOCAL_PLACEHOLDERS)
    config = _validate(data)
    config.unit_names()  # checks ids
    shared = overlaps(listeners(config))
    if shared:
        raise ConfigError("\n".join(shared))
    if config.pipeline.worker_count() > 1:
        try:
            check_workers(config)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if worker is None:
        return config  # as written: {worker} left in place (banners, checks)
    mine = for_worker(data, worker)
    return config if mine == data else _validate(mine)


def _validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, data)) from None


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path``. Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def load_config(
    path: str | Path,
    env: dict[str, str] | None = None,
    local_urls: dict[str, str] | None = None,
) -> Config:
    """Read, substitute and validate a YAML config file. Raises :class:`ConfigError`."""
    data = read_yaml(path)
    try:
        return parse_config(data, env, local_urls)
    except ConfigError as error:
        raise ConfigError(f"{path}:\n{error}") from None


def build_filter(unit: FilterConfig, name: str, ctx: BuildContext) -> Filter:
    """The filter of ``unit``, with its ``when`` condition. Raises ValueError/OSError."""
    built = unit.build(name, ctx)
    built.when = unit.selector()
    return built


def build_sink_runner(unit: SinkConfig, name: str, ctx: BuildContext) -> SinkRunner:
    """The sink of ``unit`` in its runner (buffer, batching, ``when``)."""
    return SinkRunner(
        unit.build(name, ctx),
        SinkSettings(
            buffer_max_events=unit.buffer_max_events,
            when_full=unit.when_full,
            batch_max_events=unit.batch_max_events,
            batch_max_delay_secs=unit.batch_max_delay_secs,
            when=unit.selector(),
        ),
        ctx.clock,
    )


def build_pipeline(config: Config, ctx: BuildContext | None = None) -> Pipeline:
    """Build every unit and the runtime around them. Raises :class:`ConfigError`."""
    ctx = ctx or BuildContext(state_dir=config.state_dir)
    names = config.unit_names()
    try:
        inputs = [unit.build(names[id(unit)], ctx) for unit in config.inputs]
        for built_input in inputs:
            built_input.reuse_port = ctx.workers > 1
        filters = [build_filter(unit, names[id(unit)], ctx) for unit in config.filters]
        sinks = [build_sink_runner(unit, names[id(unit)], ctx) for unit in config.sinks]
    except (ValueError, OSError) as error:
        raise ConfigError(str(error)) from None
    settings = config.pipeline
    queue = None
    if settings.queue.type == "disk":
        queue = DiskQueue(
            settings.queue.path or ctx.state_dir / "queue",
            settings.queue.spool_settings(),
            ctx.registry.unit("queue", "pipeline"),
            settings.filter_batch_max_events,
        )
    return Pipeline(
        inputs,
        filters,
        sinks,
        registry=ctx.registry,
        ingest_max_events=settings.ingest_max_events,
        filter_batch_max_events=settings.filter_batch_max_events,
        tick_secs=settings.tick_secs,
        clock=ctx.clock,
        dead_letter_dir=ctx.state_dir / "dead-letters",
        queue=queue,
    )
