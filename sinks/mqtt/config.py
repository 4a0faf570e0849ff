"""The ``mqtt`` sink's settings: the broker, the topic template, the payload format,
the caps (``rate_limit``) and the bounds on what waits for the broker.

Everything is checked when the config is read; the runtime parts
(:mod:`.sink` and the modules it ties together) trust these models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from logstream.payload import framer
from logstream.severity import parse_name
from logstream.units import BuildContext, SinkConfig, WhenFull

from .topics import check_segment, check_topic_filter, parse_topic

if TYPE_CHECKING:
    from .sink import MqttSink

_MIB = 1024 * 1024
_MAX_PACKET = 268_435_455  # MQTT's largest remaining length


@dataclass(frozen=True)
class Endpoint:
    """Where the broker is, from ``url``."""

    host: str
    port: int
    tls: bool


def parse_url(url: str) -> Endpoint:
    """``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883), without credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("url must start with mqtt:// or mqtts://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url: credentials are taken out of the url before this point")
    if not parts.hostname:
        raise ValueError("url has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("url may not have a path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("url port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("url port must be a number from 1 to 65535")
    tls = parts.scheme == "mqtts"
    return Endpoint(parts.hostname, port or (8883 if tls else 1883), tls)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SharedBudgetConfig(_Strict):
    """One budget for every instance using the same Redis ``key`` (``rate_limit.shared``)."""

    redis: SecretStr = Field(
        description="redis://[user:password@]host:6379/0 (rediss:// for TLS); never logged "
        "with its password."
    )
    key: str = Field(min_length=1, max_length=200, description="Name of the shared budget.")
    expected_instances: int = Field(
        default=2, ge=1, le=10_000, description="How many instances share it, roughly."
    )
    fallback_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Part of each cap an instance uses alone while Redis is unreachable "
        "(default: 1 / expected_instances).",
    )

    @model_validator(mode="after")
    def _check_redis(self) -> SharedBudgetConfig:
        # Checked here, not in a field validator: a field's error shows its value,
        # and this one may hold a password.
        parts = urlsplit(self.redis.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError(
                "redis must be a redis://[user:password@]host[:port][/db] or rediss:// URL"
            )
        return self

    @property
    def local_share(self) -> float:
        return self.fallback_share or 1.0 / self.expected_instances


class TopicCaps(_Strict):
    """Caps of the topics an MQTT topic filter matches (``rate_limit.topics``)."""

    bytes_per_sec: float | None = Field(default=None, gt=0, description="Wire bytes/s.")
    messages_per_sec: float | None = Field(default=None, gt=0, description="Messages/s.")


class RateLimitConfig(_Strict):
    """Token-bucket caps on what the sink publishes, and the sampling that keeps under them.

    Bytes are wire bytes: the PUBLISH packet with its header, topic and
    properties, after compression.
    """

    topic_bytes_per_sec: float | None = Field(
        default=None, gt=0, description="Cap of every topic (each has its own bucket)."
    )
    topic_messages_per_sec: float | None = Field(default=None, gt=0)
    total_bytes_per_sec: float | None = Field(
        default=None, gt=0, description="Cap of everything the sink publishes."
    )
    total_messages_per_sec: float | None = Field(default=None, gt=0)
    topics: dict[str, TopicCaps] = Field(
        default_factory=dict,
        description="MQTT topic filter -> caps replacing topic_*; the first match wins.",
    )
    burst_secs: float = Field(
        default=0.02,
        gt=0,
        le=10,
        description="Bucket capacity in seconds of the rate: any 1 s window carries at most "
        "cap * (1 + burst_secs). Payloads are kept to half of it.",
    )
    queue_secs: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Payloads waiting for tokens, in seconds of the rate; more are dropped.",
    )
    adaptive: bool = Field(
        default=True,
        description="Lower keep ratios per severity (lowest first) to fit the byte caps "
        "instead of dropping whole payloads.",
    )
    window_secs: float = Field(default=1.0, gt=0, le=60, description="How often ratios change.")
    accounting_interval_secs: float = Field(
        default=10.0, ge=0, description="How often a topic that lost events is told (0: never)."
    )
    shared: SharedBudgetConfig | None = Field(
        default=None,
        description="Draw the byte/message caps from one budget in Redis shared with other "
        "instances (default: this instance's own, shared by its worker processes).",
    )
    level_field: str = Field(default="level", description="The field holding the severity.")
    unknown_level: str = Field(
        default="INFO", description="Severity of events whose level is missing or unknown."
    )

    @field_validator("topics")
    @classmethod
    def _check_filters(cls, value: dict[str, TopicCaps]) -> dict[str, TopicCaps]:
        for topic_filter, caps in value.items():
            check_topic_filter(topic_filter)
            if caps.bytes_per_sec is None and caps.messages_per_sec is None:
                raise ValueError(
                    f"topics.{topic_filter}: give bytes_per_sec and/or messages_per_sec"
                )
        return value

    @field_validator("unknown_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return parse_name(value).name

    def byte_caps(self) -> dict[str, float]:
        """The byte caps by topic filter, in the order they apply (first match wins):
        each ``topics`` filter with ``bytes_per_sec``, ``#`` for ``topic_bytes_per_sec``
        and ``*`` for ``total_bytes_per_sec`` (what ``/metrics`` and the /tail page show)."""
        caps = {f: c.bytes_per_sec for f, c in self.topics.items() if c.bytes_per_sec is not None}
        if self.topic_bytes_per_sec is not None:
            caps.setdefault("#", self.topic_bytes_per_sec)
        if self.total_bytes_per_sec is not None:
            caps["*"] = self.total_bytes_per_sec
        return caps

    @property
    def any_caps(self) -> bool:
        return any(
            value is not None
            for value in (
                self.topic_bytes_per_sec,
                self.topic_messages_per_sec,
                self.total_bytes_per_sec,
                self.total_messages_per_sec,
            )
        ) or bool(self.topics)


class MqttSinkConfig(SinkConfig):
    """Publish events to an MQTT broker: one JSON event per message, or batched payloads.

    Credentials in the url (``mqtt://user:password@host``) are moved to
    ``username`` / ``password`` when the config is read, so ``url`` never
    holds a secret.
    """

    type: Literal["mqtt"]
    url: str = Field(
        default="",
        description="mqtt://host[:port] or mqtts://host[:port] (1883 / 8883); with urls, "
        "the first of them.",
    )
    urls: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Several brokers: every message is published to each (its own connection, "
        "outstanding bound and counters); give url or urls.",
    )
    sequence: bool | None = Field(
        default=None,
        description="Number messages per topic with a producer id (envelope line and MQTT 5 "
        "properties) so subscribers of several brokers drop repeats (default: on with "
        "several urls).",
    )
    producer: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Producer id in numbered messages (default: host name and a random part, "
        "new at every start).",
    )
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = Field(
        default=None, description="CA certificates for mqtts (default: the system's)."
    )
    client_id: str | None = Field(default=None, description="Default: logstream-<random>.")
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_secs: int = Field(default=30, ge=5, le=65_535)
    topic: str = Field(description="Template, e.g. logs/{host}/{level}.")
    missing: str = Field(default="_", description="Topic level used for a missing or empty field.")
    qos: Literal[0, 1] = 0
    retain: bool = False
    encoding: Literal["json", "ndjson", "lz4", "zstd"] = Field(
        default="json",
        description="json: one event per message; ndjson, lz4, zstd: batched payloads.",
    )
    compression_level: int | None = Field(
        default=None, description="lz4: 0-16 (default 0), zstd: 1-19 (default 3)."
    )
    max_payload_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        le=_MAX_PACKET - 65_536,
        description="Framed payload size at most; keep it below the broker's maximum packet "
        "size (MQTT 5 brokers that announce one lower it further).",
    )
    payload_max_events: int = Field(default=1_000, ge=1, description="Events per payload at most.")
    payload_max_delay_secs: float = Field(
        default=0.2,
        ge=0,
        le=10,
        description="How long a partly filled payload waits for more events of its topic.",
    )
    rate_limit: RateLimitConfig | None = Field(
        default=None, description="Token-bucket caps per topic and in total, with sampling."
    )
    max_outstanding_messages: int = Field(
        default=10_000,
        ge=1,
        le=65_000,  # below paho's 65535 message ids, so a tracked id is never reused
        description="Messages handed to paho but not yet written (QoS 0) or acknowledged (QoS 1).",
    )
    max_outstanding_bytes: int = Field(
        default=16 * _MIB, ge=1, description="Payload bytes of those messages at most."
    )
    connect_wait_secs: float = Field(
        default=3.0, ge=0, description="How long start() waits for the first connection."
    )
    reconnect_min_delay_secs: int = Field(default=1, ge=1)
    reconnect_max_delay_secs: int = Field(default=30, ge=1)
    close_timeout_secs: float = Field(
        default=5.0, ge=0, description="How long close() waits for outstanding messages."
    )
    when_full: WhenFull = Field(
        default="drop_newest",
        description="drop_newest: a slow broker never stalls the pipeline; block: it does.",
    )
    websockets_url: str | None = Field(
        default=None,
        description="The MQTT-over-WebSockets URL browsers use to reach this broker (the /tail "
        "page); default: none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _take_credentials_out_of_url(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        urls = data.get("urls")
        if isinstance(urls, list) and urls:
            if data.get("url"):
                raise ValueError("give url or urls, not both")
            if not all(isinstance(url, str) for url in urls):
                raise ValueError("urls must be a list of mqtt:// or mqtts:// URLs")
            found: dict[str, str] = {}
            clean = []
            for url in urls:
                bare, username, password = _split_credentials(url)
                clean.append(bare)
                for key, value in (("username", username), ("password", password)):
                    if not value:
                        continue
                    if found.setdefault(key, value) != value:
                        raise ValueError(
                            f"urls hold different values of {key}: one {key} for every broker"
                        )
            data = {**data, "urls": clean, "url": clean[0]}
            for key, value in found.items():
                if data.get(key) and data[key] != value:
                    raise ValueError(f"{key} is given both in urls and as {key}: give it once")
                data[key] = value
            return data
        if not isinstance(data.get("url"), str):
            return data
        bare, username, password = _split_credentials(data["url"])
        data = {**data, "url": bare}
        for key, value in (("username", username), ("password", password)):
            if not value:
                continue
            if data.get(key):
                raise ValueError(f"{key} is given both in url and as {key}: give it once")
            data[key] = value
        return data

    @field_validator("username", "password", "client_id", "ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # "${MQTT_USERNAME:-}" in a shipped config means: no user name.
        return None if value == "" else value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as a number.
        return "5" if value == 5 and not isinstance(value, bool) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value:
            parse_url(value)
        return value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        endpoints = [parse_url(url) for url in value]
        if len({(e.host, e.port) for e in endpoints}) != len(endpoints):
            raise ValueError("urls name the same broker twice")
        return value

    @property
    def numbered(self) -> bool:
        """Whether messages carry a producer id and a number (``sequence``)."""
        return self.sequence if self.sequence is not None else len(self.urls) > 1

    @field_validator("websockets_url", mode="before")
    @classmethod
    def _no_websockets_url(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        parse_topic(value)
        return value

    @field_validator("missing")
    @classmethod
    def _check_missing(cls, value: str) -> str:
        return check_segment(value, "missing")

    @model_validator(mode="after")
    def _check_combinations(self) -> MqttSinkConfig:
        if not self.urls:
            if not self.url:
                raise ValueError("give url (one broker) or urls (several brokers)")
            object.__setattr__(self, "urls", [self.url])  # frozen: set once, here
        if self.websockets_url is not None:
            _check_websockets_url(self.websockets_url)
        if self.ca_file is not None and not any(u.startswith("mqtts://") for u in self.urls):
            raise ValueError(f"ca_file is only used with an mqtts:// url, value: {self.url!r}")
        if self.numbered and self.encoding == "json" and self.protocol != "5":
            raise ValueError(
                "numbered messages (sequence, or several urls) with encoding json need "
                "protocol 5 (the number goes in MQTT 5 properties); use a batched encoding "
                "(ndjson, lz4, zstd), whose payloads carry it, or protocol 5"
            )
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.compression_level is not None:
            if self.encoding not in ("lz4", "zstd"):
                raise ValueError(
                    "compression_level is only used with encoding lz4 or zstd, value: "
                    f"{self.compression_level} with encoding {self.encoding!r}"
                )
            framer(self.encoding, self.compression_level)  # checks the range, names the key
        if self.reconnect_min_delay_secs > self.reconnect_max_delay_secs:
            raise ValueError(
                "reconnect_min_delay_secs must not exceed reconnect_max_delay_secs, values: "
                f"{self.reconnect_min_delay_secs} > {self.reconnect_max_delay_secs}"
            )
        return self

    def build(self, name: str, ctx: BuildContext) -> MqttSink:
        from .sink import MqttSink  # the sink imports this module

        return MqttSink(self, name, ctx)


def _split_credentials(url: str) -> tuple[str, str, str]:
    """``mqtt://user:password@host`` -> (``mqtt://host``, user, password), unquoted."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not sep or not at:
        return url, "", ""
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{hostport}{slash}{tail}", unquote(user), unquote(password)


def _check_websockets_url(value: str) -> None:
    """Checked on the model, not the field: a field's error shows its value, and a
    mistaken one may hold a password."""
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("websockets_url must be ws://host[:port][/path] or wss://...")
    if parts.username is not None or parts.password is not None:
        # The page hands this URL to every browser: it may not hold a secret.
        raise ValueError("websockets_url may not hold credentials (browsers see it)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("websockets_url port must be a number from 1 to 65535") from None
