"""Where the ``mqtt`` sink publishes: broker URLs and each broker's own settings.

``url`` names one broker; ``urls`` several, each a URL or an entry with the
settings of that broker::

    urls:
      - "mqtts://a.example:8883"                 # the sink's username/password/ca_file
      - url: "mqtts://b.example:8883"
        username: shipper-b
        password: "${MQTT_B_PASSWORD}"
        ca_file: /etc/ssl/b-ca.pem

An entry's ``username`` (with its ``password``) and ``ca_file`` replace the
sink's for that broker; what it leaves out comes from the sink. Passwords
are ``SecretStr`` (masked in reprs, errors, the banner and ``logstream
check``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


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


def split_credentials(url: str) -> tuple[str, str, str]:
    """``mqtt://user:password@host`` -> (``mqtt://host``, user, password), unquoted."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not sep or not at:
        return url, "", ""
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{hostport}{slash}{tail}", unquote(user), unquote(password)


class BrokerConfig(BaseModel):
    """One entry of ``urls`` given as an object: a broker with its own settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="mqtt://host[:port] or mqtts://host[:port].")
    username: str | None = Field(default=None, description="Default: the sink's username.")
    password: SecretStr | None = Field(default=None, description="Goes with username.")
    ca_file: Path | None = Field(
        default=None, description="CA certificates for this mqtts broker (default: the sink's)."
    )

    @model_validator(mode="before")
    @classmethod
    def _take_credentials_out_of_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
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

    @field_validator("username", "password", "ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # "${MQTT_B_USERNAME:-}": none

    @model_validator(mode="after")
    def _check(self) -> BrokerConfig:
        endpoint = parse_url(self.url)
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.ca_file is not None and not endpoint.tls:
            raise ValueError(f"ca_file is only used with an mqtts:// url, value: {self.url!r}")
        return self


@dataclass(frozen=True)
class Broker:
    """A broker the sink publishes to, with the settings that apply to it."""

    url: str  # without credentials
    endpoint: Endpoint
    username: str | None
    password: SecretStr | None
    ca_file: Path | None

    @property
    def password_text(self) -> str | None:
        return self.password.get_secret_value() if self.password is not None else None


def resolve_brokers(
    entries: list[str | BrokerConfig],
    username: str | None,
    password: SecretStr | None,
    ca_file: Path | None,
) -> list[Broker]:
    """Each entry with the sink's settings filling what it leaves out. ``ValueError``
    when two entries name the same broker."""
    brokers = []
    for entry in entries:
        if isinstance(entry, str):
            brokers.append(Broker(entry, parse_url(entry), username, password, ca_file))
            continue
        own = entry.username is not None
        brokers.append(
            Broker(
                url=entry.url,
                endpoint=parse_url(entry.url),
                username=entry.username if own else username,
                password=entry.password if own else password,
                ca_file=entry.ca_file if entry.ca_file is not None else ca_file,
            )
        )
    places = {(broker.endpoint.host, broker.endpoint.port) for broker in brokers}
    if len(places) != len(brokers):
        raise ValueError("urls name the same broker twice")
    return brokers
