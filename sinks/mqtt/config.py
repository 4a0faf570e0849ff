"""The ``mqtt`` sink's settings: the brokers (:mod:`.brokers`), the topic template, the
payload format, the caps (``rate_limit``, :mod:`.limits`) and the bounds on what waits
for the broker.

Everything is checked when the config is read; the runtime parts
(:mod:`.sink` and the modules it ties together) trust these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from logstream.payload import framer
from logstream.units import BuildContext, SinkConfig, WhenFull

from .brokers import Broker, BrokerConfig, parse_url, resolve_brokers, split_credentials
from .limits import RateLimitConfig
from .topics import check_segment, parse_topic

if TYPE_CHECKING:
    from .sink import MqttSink

_MIB = 1024 * 1024
_MAX_PACKET = 268_435_455  # MQTT's largest remaining length


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
    urls: list[str | BrokerConfig] = Field(
        default_factory=list,
        max_length=16,
        description="Several brokers: every message is published to each (its own connection, "
        "outstanding bound and counters); give url or urls. An entry is a URL or "
        "{url, username, password, ca_file}: that broker's settings (default: the sink's).",
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

    _brokers: list[Broker] = PrivateAttr(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _take_credentials_out_of_url(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        urls = data.get("urls")
        if isinstance(urls, list) and urls:
            if data.get("url"):
                raise ValueError("give url or urls, not both")
            if not all(isinstance(url, (str, dict, BrokerConfig)) for url in urls):
                raise ValueError(
                    "urls must be a list of mqtt:// or mqtts:// URLs or {url, username, "
                    "password, ca_file} entries"
                )
            found: dict[str, str] = {}
            clean: list[Any] = []
            for url in urls:
                if not isinstance(url, str):  # an entry: its credentials are its own
                    clean.append(url)
                    continue
                bare, username, password = split_credentials(url)
                clean.append(bare)
                for key, value in (("username", username), ("password", password)):
                    if not value:
                        continue
                    if found.setdefault(key, value) != value:
                        raise ValueError(
                            f"urls hold different values of {key}: give each broker's "
                            "credentials in an entry {url, username, password}"
                        )
            data = {**data, "urls": clean, "url": _bare_url(clean[0])}
            for key, value in found.items():
                if data.get(key) and data[key] != value:
                    raise ValueError(f"{key} is given both in urls and as {key}: give it once")
                data[key] = value
            return data
        if not isinstance(data.get("url"), str):
            return data
        bare, username, password = split_credentials(data["url"])
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

    @property
    def brokers(self) -> list[Broker]:
        """Every broker with the settings that apply to it (``urls`` or ``url``)."""
        return self._brokers

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
        # Checked on the model, not the field: a field's error shows its value, and
        # an entry holds a password.
        self._brokers = resolve_brokers(self.urls, self.username, self.password, self.ca_file)
        if self.websockets_url is not None:
            _check_websockets_url(self.websockets_url)
        if self.ca_file is not None and not any(b.endpoint.tls for b in self._brokers):
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


def _bare_url(entry: Any) -> str:
    """The URL of a ``urls`` entry, without credentials ("" when it has none yet)."""
    if isinstance(entry, BrokerConfig):
        return entry.url
    url = entry.get("url") if isinstance(entry, dict) else entry
    return split_credentials(url)[0] if isinstance(url, str) else ""


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
